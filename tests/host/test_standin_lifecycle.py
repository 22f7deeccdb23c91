"""Timers (fast clock), retries, cancellation, fault injection, restarts and ACL isolation."""

import itertools
import json
import queue
import time

import pytest

from tools.standin import StandIn
from tools.standin.device import Device

_NAMES = itertools.count(1)
MINUTE = 0.4  # real seconds per timer minute


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    with StandIn(tmp_path_factory.mktemp("standin"), minute_seconds=MINUTE) as stand_in:
        yield stand_in


@pytest.fixture
def dev(aws):
    device = Device.connect(aws, f"life-{next(_NAMES)}")
    yield device
    device.close()


def _job(aws, dev, doc=None, **options) -> str:
    job_id = f"job-{next(_NAMES)}"
    aws.create_job(job_id, doc or {"operation": "demo"}, [dev.name], **options)
    return job_id


def _next_head(dev) -> dict:
    """The next notify-next message."""
    return dev.expect("notify-next")


# ----- timers --------------------------------------------------------------------------------
def test_step_timeout_times_out_and_notifies(aws, dev):
    job_id = _job(aws, dev)
    started = dev.request("start-next", {"stepTimeoutInMinutes": 1}).payload["execution"]
    assert started["approximateSecondsBeforeTimedOut"] == pytest.approx(60, abs=2)
    execution = aws.wait_terminal(job_id, dev.name, timeout=5)
    assert execution["status"] == "TIMED_OUT" and execution["versionNumber"] == 3
    notify = dev.expect("notify")
    while notify["jobs"]:
        notify = dev.expect("notify")
    empty = _next_head(dev)
    while "execution" in empty:
        empty = _next_head(dev)
    reply = dev.request(f"{job_id}/update", {"status": "SUCCEEDED"})
    assert reply.code == "InvalidStateTransition" and reply.payload["executionState"]["status"] == "TIMED_OUT"
    described = dev.request(f"{job_id}/get").payload["execution"]
    assert "approximateSecondsBeforeTimedOut" not in described


def test_progress_update_rearms_and_minus_one_cancels_the_step_timer(aws, dev):
    job_id = _job(aws, dev)
    dev.request("start-next", {"stepTimeoutInMinutes": 1})
    assert dev.request(f"{job_id}/update", {"status": "IN_PROGRESS", "stepTimeoutInMinutes": -1}).accepted
    later = _job(aws, dev, timeout_minutes=1)  # a second job's timer shows the clock runs
    assert dev.request(f"{later}/update", {"status": "IN_PROGRESS"}).accepted
    assert aws.wait_terminal(later, dev.name, timeout=5)["status"] == "TIMED_OUT"
    assert aws.describe_execution(job_id, dev.name)["status"] == "IN_PROGRESS"


def test_in_progress_timeout_caps_the_step_timer(aws, dev):
    job_id = _job(aws, dev, timeout_minutes=1)
    execution = dev.request("start-next", {"stepTimeoutInMinutes": 100}).payload["execution"]
    assert execution["approximateSecondsBeforeTimedOut"] <= 60
    assert aws.wait_terminal(job_id, dev.name, timeout=5)["status"] == "TIMED_OUT"


def test_retry_config_requeues_failed_and_timed_out(aws, dev):
    job_id = _job(aws, dev, retry={"FAILED": 1, "TIMED_OUT": 1})
    first = dev.request("start-next").payload["execution"]
    assert first["executionNumber"] == 1
    assert dev.request(f"{job_id}/update", {"status": "FAILED"}).accepted
    nxt = _next_head(dev)
    while nxt.get("execution", {}).get("executionNumber") != 2:
        nxt = _next_head(dev)
    assert nxt["execution"]["status"] == "QUEUED" and nxt["execution"]["versionNumber"] == 1
    second = dev.request("start-next", {"stepTimeoutInMinutes": 1}).payload["execution"]
    assert second["jobId"] == job_id and second["executionNumber"] == 2
    while nxt.get("execution", {}).get("executionNumber") != 3:  # TIMED_OUT is retried as #3
        nxt = _next_head(dev)
    assert aws.describe_execution(job_id, dev.name, 2)["status"] == "TIMED_OUT"
    third = dev.request("start-next").payload["execution"]
    assert third["executionNumber"] == 3
    assert dev.request(f"{job_id}/update", {"status": "FAILED"}).accepted
    assert aws.describe_execution(job_id, dev.name)["status"] == "FAILED"  # no retries left
    summaries = aws.engine.list_executions_for_job(job_id)["executionSummaries"]
    assert [s["jobExecutionSummary"]["retryAttempt"] for s in summaries] == [0, 1, 2]
    assert aws.describe_job(job_id)["status"] == "COMPLETED"


# ----- cancellation --------------------------------------------------------------------------
def test_cancel_of_the_queued_head_moves_notify_next(aws, dev):
    first = _job(aws, dev)
    second = _job(aws, dev)
    assert _next_head(dev)["execution"]["jobId"] == first
    aws.cancel_execution(first, dev.name)
    assert _next_head(dev)["execution"]["jobId"] == second
    assert aws.describe_execution(first, dev.name)["status"] == "CANCELED"
    reply = dev.request(f"{first}/update", {"status": "IN_PROGRESS"})
    assert reply.code == "InvalidStateTransition" and reply.payload["executionState"]["status"] == "CANCELED"


def test_cancel_job_leaves_in_progress_unless_forced(aws, dev):
    job_id = _job(aws, dev)
    dev.request("start-next")
    aws.cancel_job(job_id)
    assert aws.describe_execution(job_id, dev.name)["status"] == "IN_PROGRESS"
    from tools.standin.core import ApiError

    with pytest.raises(ApiError) as err:
        aws.cancel_execution(job_id, dev.name)
    assert err.value.error_type == "InvalidStateTransitionException" and err.value.status == 409
    aws.cancel_job(job_id, force=True, reasonCode="BAD_BUILD", comment="stop it")
    execution = aws.describe_execution(job_id, dev.name)
    assert execution["status"] == "CANCELED" and execution["forceCanceled"] is True
    job = aws.describe_job(job_id)
    assert job["status"] == "CANCELED" and job["forceCanceled"] and job["reasonCode"] == "BAD_BUILD"
    assert dev.request(f"{job_id}/update", {"status": "SUCCEEDED"}).code == "InvalidStateTransition"


def test_update_terminal_code_setting(aws, dev):
    job_id = _job(aws, dev)
    assert dev.request(f"{job_id}/update", {"status": "SUCCEEDED"}).accepted
    aws.settings(update_terminal_code="TerminalStateReached")
    try:
        reply = _await_setting(aws, dev, job_id)
        assert reply.payload["executionState"]["status"] == "SUCCEEDED"
    finally:
        aws.settings(update_terminal_code="InvalidStateTransition")


def _await_setting(aws, dev, job_id, suffix="update", body=None):
    for _ in range(100):
        reply = dev.request(f"{job_id}/{suffix}", body or {"status": "SUCCEEDED"})
        if reply.code == "TerminalStateReached":
            return reply
    pytest.fail("the service did not apply the setting")


def test_describe_terminal_setting(aws, dev):
    job_id = _job(aws, dev)
    assert dev.request(f"{job_id}/update", {"status": "FAILED"}).accepted
    assert dev.request(f"{job_id}/get").payload["execution"]["status"] == "FAILED"  # the default
    aws.settings(describe_terminal_rejects=True)
    try:
        assert "executionState" not in _await_setting(aws, dev, job_id, "get", {}).payload
    finally:
        aws.settings(describe_terminal_rejects=False)


# ----- fault injection -----------------------------------------------------------------------
def _with_faults(aws, dev, check, **faults):
    """Apply faults, wait until the service uses them (it re-reads settings within 0.2 s)."""
    aws.set_faults(**faults)
    try:
        for _ in range(200):
            if check():
                return
        pytest.fail(f"faults {faults} never showed")
    finally:
        aws.set_faults()
        while dev.request("get").code is not None:
            pass


def test_throttle_every_nth_request(aws, dev):
    seen = []

    def check():
        codes = [dev.request("get").code for _ in range(6)]
        seen.append(codes)
        return codes.count("RequestThrottled") == 2 and all(c in (None, "RequestThrottled") for c in codes)

    _with_faults(aws, dev, check, throttle_every=3)


def test_internal_error_rate(aws, dev):
    def check():
        reply = dev.request("get", {"clientToken": "tok-ie"})
        return reply.code == "InternalError" and reply.payload["clientToken"] == "tok-ie"

    _with_faults(aws, dev, check, internal_error_rate=1.0)


def test_duplicate_responses(aws, dev):
    def check():
        dev.drain()
        reply = dev.request("get", {"clientToken": f"dup-{next(_NAMES)}"})
        # the first copy answered the request; the second one lands in the message queue
        try:
            topic, payload = dev.messages.get(timeout=0.5)
        except queue.Empty:  # not applied yet
            return False
        return topic == reply.topic and payload == reply.payload

    _with_faults(aws, dev, check, duplicate_responses=True)


def test_delayed_responses(aws, dev):
    _with_faults(aws, dev, lambda: dev.request("get").latency >= 0.3, response_delay=0.3)


# ----- persistence and restarts --------------------------------------------------------------
def test_service_killed_and_restarted_loses_nothing(aws, dev):
    job_id = _job(aws, dev)
    _next_head(dev)
    started = dev.request("start-next", {"statusDetails": {"phase": "a"}}).payload["execution"]
    aws.stop_service()  # SIGKILL
    dev.publish(f"{job_id}/update", {"status": "IN_PROGRESS", "clientToken": "while-down"})
    queued = _job(aws, dev)  # control plane works while the service is down
    waiting = aws.store.read().execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    assert waiting == 1  # its notify waits for the service (the head did not change)
    aws.start_service()
    while [s["jobId"] for s in dev.expect("notify")["jobs"].get("QUEUED", [])] != [queued]:
        pass  # (the notify of the first job's creation comes first)
    while aws.store.read().execute("SELECT COUNT(*) FROM outbox").fetchone()[0]:
        time.sleep(0.02)  # deleted once the broker acknowledged it
    answer = dev.expect(f"{job_id}/update/accepted")
    assert answer["clientToken"] == "while-down"  # the request waited in the broker session
    described = dev.request(f"{job_id}/get").payload["execution"]
    assert described["versionNumber"] == started["versionNumber"] + 1
    assert described["statusDetails"] == {"phase": "a"}
    pending = dev.request("get").payload
    assert [s["jobId"] for s in pending["queuedJobs"]] == [queued]


def test_broker_restart_on_the_same_port(aws, dev):
    port = aws.port
    aws.stop_broker()
    aws.start_broker()
    assert aws.port == port
    again = Device.connect(aws, dev.name + "-b")
    try:
        assert again.request("get").accepted
    finally:
        again.close()


# ----- ACL isolation -------------------------------------------------------------------------
def test_a_thing_cannot_receive_another_things_jobs_topics(aws, dev):
    """mosquitto 2.0's acl_file grants the SUBACK but never delivers what `read` does not allow."""
    spies = [
        Device.connect(aws, f"life-{next(_NAMES)}", subscribe=[dev.prefix + "#"]),
        Device.connect(aws, f"life-{next(_NAMES)}", subscribe=["$aws/things/+/jobs/#"]),
        Device.connect(aws, f"life-{next(_NAMES)}", subscribe=["#"]),
    ]
    try:
        job_id = _job(aws, dev)
        assert dev.expect("notify-next")["execution"]["jobId"] == job_id
        assert dev.request("start-next").accepted
        for spy in spies:
            spy.client.subscribe(spy.prefix + "#", qos=1)
            assert spy.request("get").accepted  # barrier after the victim's traffic
            leaked = [t for t, _ in spy.drain() if t.startswith(dev.prefix)]
            assert leaked == []
    finally:
        for spy in spies:
            spy.close()


def test_a_thing_cannot_publish_into_another_things_jobs(aws, dev):
    job_id = _job(aws, dev)
    intruder = Device.connect(aws, f"life-{next(_NAMES)}")
    try:
        intruder.client.publish(dev.prefix + "start-next", json.dumps({"clientToken": "evil"}), qos=1)
        intruder.client.publish(dev.prefix + f"{job_id}/update", json.dumps({"status": "FAILED"}), qos=1)
        assert intruder.request("get").accepted  # barrier: the service saw everything before this
        assert dev.request("get").accepted
        assert aws.describe_execution(job_id, dev.name)["status"] == "QUEUED"
        topics = [t for t, _ in dev.drain()]
        assert not any(t.endswith("start-next/accepted") for t in topics)
    finally:
        intruder.close()


def test_a_thing_publishes_telemetry_only_under_its_own_name(aws, dev):
    name = f"life-{next(_NAMES)}"
    watcher = Device.connect(aws, name, subscribe=[f"logi2/device/{dev.name}", f"$aws/things/{name}/jobs/#"])
    pki = aws.broker.folder / "pki"
    service = Device(
        "telemetry-watch", aws.port, aws.ca.cert_pem, pki / "jobs-service.cert.pem",
        pki / "jobs-service.key.pem", subscribe=["logi2/device/#"],
    ).start()  # fmt: skip
    try:
        assert service.suback == [1]
        dev.client.publish("logi2/device/someone-else", b'{"forged":1}', qos=1)
        dev.client.publish(f"logi2/device/{dev.name}", b'{"t":1}', qos=1)
        topic, payload = service.messages.get(timeout=5)
        assert (topic, payload) == (f"logi2/device/{dev.name}", {"t": 1})  # the forged one was dropped
        assert watcher.request("get").accepted
        assert watcher.drain() == []  # things may not read telemetry
    finally:
        service.close()
        watcher.close()
