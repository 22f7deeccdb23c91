"""End to end: the Jobs service misbehaving as AWS may (docs/protocol.md, "Rejected answers"):
RequestThrottled and InternalError (retried with backoff and a fresh token), duplicate responses
and notifications (ignored by token, never run twice), VersionMismatch (reconciled), a forced
cancel of the running job and a step timeout (the handler stops, the pin goes to its safe level,
nothing more is reported).
"""

import json

import pytest

from tests.host.e2e import Rig, details, wait_until

MINUTE = 1.5  # the stand-in's fast clock: real seconds per timer minute
PULSE_ON, PULSE_OFF = "LED 4 0 1", "LED 4 1 0"


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    rig = Rig(tmp_path_factory.mktemp("e2e-faults"), minute_seconds=MINUTE).start()
    yield rig
    rig.stop()


@pytest.fixture(autouse=True)
def _clean(rig):
    yield
    rig.stop_devices()
    rig.faults()


def pulse(ms: int, pin: str = "LED") -> dict:
    return {"operation": "gpio.pulse", "pin": pin, "value": 1, "ms": ms}


def test_request_throttled_is_retried_and_every_job_completes_once(rig):
    dev = rig.device("flt-throttle")
    rig.faults(throttle_every=2)
    for i, relay in enumerate(("RELAY1", "RELAY2", "RELAY3")):
        done = dev.run(f"throttle-{i}", {"operation": "gpio.write", "pin": relay, "value": 1})
        assert done["status"] == "SUCCEEDED", done
        assert done["versionNumber"] == 3  # one start and one final update were applied
    assert "rejected RequestThrottled - retry in" in dev.output()
    assert dev.pins_log() == ["RELAY1 25 0 1", "RELAY2 26 0 1", "RELAY3 27 0 1"]
    assert dev.problems() == []


def test_internal_error_is_retried_and_every_job_completes_once(rig):
    # half the requests fail; 10 retries make a lost request a 1-in-2000 event
    dev = rig.device("flt-internal", retries=10, retry_base_ms=10)
    rig.faults(internal_error_rate=0.5)
    for i in range(4):
        done = dev.run(f"internal-{i}", pulse(1, pin="RELAY4"), timeout=30)
        assert done["status"] == "SUCCEEDED", done
        assert done["versionNumber"] == 3
    assert "rejected InternalError - retry in" in dev.output()
    assert dev.pins_log() == ["RELAY4 32 0 1", "RELAY4 32 1 0"] * 4
    assert dev.problems() == []


def test_duplicate_responses_and_notifications_are_ignored(rig):
    telemetry = rig.sniffer("logi2/device/flt-dup")
    try:
        dev = rig.device("flt-dup", telemetry_interval_s=1)
        rig.faults(duplicate_responses=True)
        for i in range(3):
            done = dev.run(f"dup-{i}", pulse(1))
            assert done["status"] == "SUCCEEDED", done
            assert done["versionNumber"] == 3
        assert dev.pins_log() == [PULSE_ON, PULSE_OFF] * 3
        # the second copy of every answer carries a token no longer awaited: counted, ignored
        counted = wait_until(
            lambda: [m for _, p in telemetry.seen() if (m := json.loads(p))["ignored"] > 0],
            10,
            "telemetry counting ignored answers",
        )
        assert counted[-1]["jobs_ok"] >= 1
        assert dev.problems() == []
    finally:
        telemetry.stop()


def test_version_mismatch_is_reconciled_and_the_job_still_succeeds(rig):
    dev = rig.device("flt-version")
    operator = rig.sniffer()
    try:
        dev.job("version-1", pulse(1500))
        wait_until(lambda: PULSE_ON in dev.pins_log(), what="the pulse to start")
        before = dev.execution("version-1")["versionNumber"]
        # someone else (here: the service identity) updates the execution: its version moves on
        operator.publish(
            "$aws/things/flt-version/jobs/version-1/update",
            json.dumps({"status": "IN_PROGRESS", "statusDetails": {"step": "operator"}}),
        )
        wait_until(lambda: dev.execution("version-1")["versionNumber"] > before, what="the version to move")
        done = dev.result("version-1")
        assert done["status"] == "SUCCEEDED", done
        assert details(done) == {"pin": "LED", "value": "0", "ms": "1500"}
        assert "VersionMismatch" in dev.output()
        assert dev.pins_log() == [PULSE_ON, PULSE_OFF]
        assert dev.problems() == []
    finally:
        operator.stop()


def test_forced_cancel_of_the_running_job_stops_it_and_nothing_more_is_reported(rig):
    dev = rig.device("flt-cancel")
    mark = dev.mark()
    dev.job("cancel-1", pulse(10000))
    wait_until(lambda: PULSE_ON in dev.pins_log(), what="the pulse to start")
    rig.aws.cancel_job("cancel-1", force=True)
    canceled = dev.wait_status("cancel-1", "CANCELED")
    dev.wait_log("job cancel-1 gpio.pulse CANCELED", after=mark)
    assert dev.pins_log() == [PULSE_ON, PULSE_OFF]  # the pin went to its safe level (0) at once
    after = dev.run("cancel-2", {"operation": "gpio.write", "pin": "RELAY1", "value": 1})
    assert after["status"] == "SUCCEEDED"
    assert dev.execution("cancel-1") == canceled  # the device sent nothing for it after the cancel
    assert dev.problems() == []


def test_a_step_timeout_times_the_job_out_and_the_handler_stops(rig):
    # one progress report at 1 s, then none for 60 s: the 1-minute step timer runs out
    dev = rig.device("flt-step", step_timeout_min=1, progress_interval_ms=60000)
    mark = dev.mark()
    dev.job("step-1", pulse(6000))
    wait_until(lambda: PULSE_ON in dev.pins_log(), what="the pulse to start")
    timed_out = dev.wait_status("step-1", "TIMED_OUT")
    dev.wait_log("job step-1 gpio.pulse CANCELED", after=mark)
    assert dev.pins_log() == [PULSE_ON, PULSE_OFF]
    assert (
        dev.run("step-2", {"operation": "gpio.write", "pin": "RELAY2", "value": 1})["status"] == "SUCCEEDED"
    )
    assert dev.execution("step-1") == timed_out
    assert dev.problems() == []


def test_progress_reports_rearm_the_step_timer(rig):
    # a report every second keeps the 1-minute (1.5 s) step timer from running out
    dev = rig.device("flt-rearm", step_timeout_min=1, progress_interval_ms=500)
    done = dev.run("rearm-1", pulse(4000))
    assert done["status"] == "SUCCEEDED", done
    assert dev.pins_log() == [PULSE_ON, PULSE_OFF]
    assert dev.problems() == []
