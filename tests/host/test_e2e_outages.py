"""End to end: outages. The broker and the Jobs service killed and restarted mid-job, and the
device's power cut (SIGKILL) at each phase of a job, then restored: each job ends as the journal
rules say (docs/contracts.md), never silently re-run; the pin log proves side effects ran once.

Phases are hit by awaiting conditions, not by sleeping: the pin log (a pulse has started), the
journal file (phase, OTA offset), the stand-in's execution state, the unix board's otadata, a
file server that holds a download at a chosen byte, and the stand-in's `response_delay` fault
(the service applies a request at once but answers late).
"""

import hashlib
import json

import pytest

from tests.host.e2e import HoldServer, Rig, details, wait_until

INTERRUPTED = "interrupted by reset, not re-run"
PULSE_ON, PULSE_OFF = "LED 4 0 1", "LED 4 1 0"


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    rig = Rig(tmp_path_factory.mktemp("e2e-outages")).start()
    yield rig
    rig.stop()


@pytest.fixture(autouse=True)
def _clean(rig):
    yield
    rig.stop_devices()
    rig.faults()
    rig.aws.start_service()


@pytest.fixture
def hold(rig):
    server = HoldServer(rig.aws)
    yield server
    server.stop()


def pulse(ms: int, pin: str = "LED") -> dict:
    return {"operation": "gpio.pulse", "pin": pin, "value": 1, "ms": ms}


def firmware_image(size: int) -> bytes:
    return b"\xe9" + bytes((i * 13 + 5) & 0xFF for i in range(1, size))


def ota_doc(url: str, image: bytes, version: str = "2.0.0") -> dict:
    sha = hashlib.sha256(image).hexdigest()
    return {"operation": "ota.firmware", "url": url, "sha256": sha, "size": len(image), "version": version}


# -- the broker and the service ----------------------------------------------------------------


def test_broker_killed_and_restarted_mid_job_the_device_reconnects_resubscribes_and_completes_once(rig):
    dev = rig.device("out-broker")
    mark = dev.mark()
    dev.job("broker-1", pulse(1500))
    wait_until(lambda: PULSE_ON in dev.pins_log(), what="the pulse to start")
    rig.aws.stop_broker()
    dev.wait_log("link lost", after=mark)
    rig.aws.start_broker()
    done = dev.result("broker-1")
    assert done["status"] == "SUCCEEDED", done
    assert details(done) == {"pin": "LED", "value": "0", "ms": "1500"}
    dev.wait_log("engine: connected (2)", after=mark)
    # resubscribed: a job created now reaches the device through notify-next
    after = dev.run("broker-2", {"operation": "gpio.write", "pin": "RELAY1", "value": 1})
    assert after["status"] == "SUCCEEDED"
    assert dev.pins_log() == [PULSE_ON, PULSE_OFF, "RELAY1 25 0 1"]
    assert dev.problems() == []


def test_service_killed_and_restarted_mid_job_loses_nothing(rig):
    dev = rig.device("out-service")
    dev.job("service-1", pulse(800))
    wait_until(lambda: PULSE_ON in dev.pins_log(), what="the pulse to start")
    rig.aws.stop_service()
    # while the service is down: the final update waits in the broker, and a new job is created
    dev.wait_journal(lambda j: j["phase"] == "done", what="the result journaled")
    dev.job("service-2", {"operation": "gpio.write", "pin": "RELAY2", "value": 1})
    assert dev.execution("service-1")["status"] == "IN_PROGRESS"
    rig.aws.start_service()
    first = dev.result("service-1")
    assert first["status"] == "SUCCEEDED", first
    assert details(first)["ms"] == "800"
    second = dev.result("service-2")
    assert second["status"] == "SUCCEEDED", second
    assert dev.pins_log() == [PULSE_ON, PULSE_OFF, "RELAY2 26 0 1"]
    assert dev.problems() == []


# -- power cuts at each phase ------------------------------------------------------------------


def test_power_cut_before_start_next_the_job_runs_once_after_power_on(rig):
    dev = rig.device("out-cut-queued")
    dev.kill()
    dev.job("queued-1", {"operation": "gpio.write", "pin": "LED", "value": 1})
    assert dev.execution("queued-1")["status"] == "QUEUED"
    dev.start()
    done = dev.result("queued-1")
    assert done["status"] == "SUCCEEDED" and done["versionNumber"] == 3, done
    assert dev.pins_log() == [PULSE_ON]


def test_power_cut_after_start_next_was_accepted_but_before_the_device_heard_it(rig):
    dev = rig.provision("out-cut-claimed")
    dev.job("claimed-1", {"operation": "gpio.write", "pin": "LED", "value": 1})
    rig.faults(response_delay=3.0)  # the service applies start-next now, answers in 3 s
    dev.start()
    dev.wait_status("claimed-1", "IN_PROGRESS")
    dev.kill()
    assert dev.pins_log() == [] and dev.journal() is None
    rig.faults()
    dev.start()
    done = dev.result("claimed-1")
    # start-next hands the IN_PROGRESS execution out again; the handler runs for the first time
    assert done["status"] == "SUCCEEDED", done
    assert dev.pins_log() == [PULSE_ON]
    assert dev.problems() == []


def test_power_cut_mid_handler_fails_the_job_and_never_repeats_the_pulse(rig):
    dev = rig.device("out-cut-running")
    dev.job("running-1", pulse(5000))
    wait_until(lambda: PULSE_ON in dev.pins_log(), what="the pulse to start")
    assert dev.journal()["phase"] == "running"
    dev.kill()
    dev.start()
    done = dev.result("running-1")
    assert done["status"] == "FAILED", done
    assert details(done) == {"reason": INTERRUPTED}
    assert dev.pins_log() == [PULSE_ON]  # not pulsed again
    wait_until(lambda: dev.journal() is None, 5, "the journal to be cleared")
    assert dev.problems() == []


def test_power_cut_after_the_side_effect_before_the_final_update_reached_the_service(rig):
    dev = rig.device("out-cut-done")
    dev.job("done-1", pulse(800))
    wait_until(lambda: PULSE_ON in dev.pins_log(), what="the pulse to start")
    rig.aws.stop_service()
    dev.wait_journal(lambda j: j["phase"] == "done", what="the result journaled")
    dev.kill()
    assert dev.execution("done-1")["status"] == "IN_PROGRESS"
    rig.aws.start_service()
    dev.start()
    done = dev.result("done-1")
    assert done["status"] == "SUCCEEDED", done
    assert details(done) == {"pin": "LED", "value": "0", "ms": "800"}
    assert dev.pins_log() == [PULSE_ON, PULSE_OFF]
    wait_until(lambda: dev.journal() is None, 5, "the journal to be cleared")
    assert dev.problems() == []


def test_power_cut_after_the_final_update_was_applied_but_before_its_answer(rig):
    # an operation with effects (a pulse) is journaled "done" with its final update
    dev = rig.provision("out-cut-answer")
    dev.job("answer-1", pulse(50))
    rig.faults(response_delay=1.0)
    dev.start()
    dev.wait_status("answer-1", "SUCCEEDED")  # applied by the service; the answer is 1 s away
    assert dev.journal()["phase"] == "done"
    dev.kill()
    rig.faults()
    mark = dev.mark()
    dev.start()
    dev.wait_log("journaled job answer-1 is over (SUCCEEDED)", after=mark)
    wait_until(lambda: dev.journal() is None, 5, "the journal to be cleared")
    assert dev.execution("answer-1")["versionNumber"] == 3  # nothing sent again
    assert dev.pins_log() == [PULSE_ON, PULSE_OFF]


def test_power_cut_after_an_idempotent_final_update_was_applied_runs_nothing_again(rig):
    # gpio.write is idempotent: never journaled; after the cut the service has it SUCCEEDED
    dev = rig.provision("out-cut-idem")
    dev.job("idem-1", {"operation": "gpio.write", "pin": "LED", "value": 1})
    rig.faults(response_delay=1.0)
    dev.start()
    dev.wait_status("idem-1", "SUCCEEDED")
    assert dev.journal() is None
    dev.kill()
    rig.faults()
    mark = dev.mark()
    dev.start()
    dev.wait_log("engine: connected", after=mark)
    after = dev.run("idem-2", {"operation": "gpio.write", "pin": "RELAY1", "value": 1})
    assert after["status"] == "SUCCEEDED"
    assert dev.execution("idem-1")["versionNumber"] == 3  # nothing sent again
    assert dev.pins_log() == [PULSE_ON, "RELAY1 25 0 1"]
    assert dev.problems() == []


def test_power_cut_mid_ota_download_resumes_from_the_journaled_offset(rig, hold):
    image = firmware_image(256 * 1024)
    hold.files["fw.bin"] = image
    hold.hold(160 * 1024)
    dev = rig.device("out-cut-ota")
    dev.job("ota-cut-1", ota_doc(hold.url("fw.bin"), image))
    entry = dev.wait_journal(
        lambda j: j["phase"] == "ota.download" and j.get("data", {}).get("offset", 0) >= 128 * 1024,
        what="a download checkpoint past 128 KiB",
    )
    assert hold.holding.wait(10)
    dev.kill()
    offset = entry["data"]["offset"]
    before = len(hold.requests)
    hold.let_go()
    dev.start()
    done = dev.result("ota-cut-1")
    assert done["status"] == "SUCCEEDED", done
    assert details(done) == {"version": "2.0.0", "previous": "1.0.0"}
    resumed = hold.requests[before:]
    assert [r["start"] for r in resumed] == [offset]
    assert sum(r["sent"] for r in resumed) == len(image) - offset
    assert (dev.root / "simboard" / "ota_1.bin").read_bytes()[: len(image)] == image
    assert dev.otadata()["slots"]["ota_1"]["state"] == "VALID"
    assert dev.problems() == []


def test_power_cut_between_the_ota_reboot_and_mark_valid_rolls_back_and_reports_failed(rig):
    image = firmware_image(64 * 1024)
    doc = ota_doc(rig.files("cut/fw.bin", image), image)
    dev = rig.provision("out-cut-verify")
    dev.job("ota-cut-2", doc)
    # every answer comes 0.7 s late, so the new image waits that long before its self-test
    rig.faults(response_delay=0.7)
    dev.start()
    wait_until(
        lambda: (
            dev.sim.boots == 2 and dev.otadata()["slots"].get("ota_1", {}).get("state") == "PENDING_VERIFY"
        ),
        20,
        "the new image booted, not yet valid",
    )
    dev.kill()
    rig.faults()
    dev.start()
    done = dev.result("ota-cut-2")
    assert done["status"] == "FAILED", done
    assert details(done) == {"reason": "rolled back"}
    ota = dev.otadata()
    assert ota["running"] == "ota_0" and ota["slots"]["ota_1"]["state"] == "ABORTED"
    echo = dev.run("ota-cut-echo", {"operation": "diag.echo"})
    assert details(echo)["firmware"] == "1.0.0"
    assert dev.problems() == []


def test_power_cut_mid_ota_files_staging_resumes_without_fetching_staged_files_again(rig, hold):
    contents = {"one.py": b"A = 1\n" * 100, "two.py": b"B = 2\n" * 20000}
    hold.files.update(contents)
    hold.hold(64 * 1024, nth_file=2)  # the second file fetched stops a half of the way in
    files = [
        {"path": name, "url": hold.url(name), "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        for name, data in contents.items()
    ]
    dev = rig.device("out-cut-files")
    dev.job("files-cut-1", {"operation": "ota.files", "version": "app-9", "files": files})
    assert hold.holding.wait(10)
    staged, held = [r["path"] for r in hold.requests]
    dev.wait_journal(lambda j: j["phase"] == "files.stage" and j.get("data", {}).get("done") == 1)
    dev.kill()
    hold.let_go()
    dev.start()
    done = dev.result("files-cut-1")
    assert done["status"] == "SUCCEEDED", done
    assert details(done) == {"version": "app-9", "previous": "none"}
    fetched = [r["path"] for r in hold.requests]
    assert fetched.count(staged) == 1 and fetched[-1] == held  # the staged file was kept
    state = json.loads((dev.root / "app" / "app.json").read_text())
    assert state["version"] == "app-9" and state["state"] == "VALID"
    for name, data in contents.items():
        assert (dev.root / "app" / state["dir"] / name).read_bytes() == data
    assert dev.problems() == []


def test_power_cut_mid_file_download_resumes_with_range_and_replaces_the_file(rig, hold):
    new = b"n" * (200 * 1024)
    hold.files["table.csv"] = new
    hold.hold(100 * 1024)
    dev = rig.provision("out-cut-download")
    (dev.root / "data").mkdir(parents=True)
    (dev.root / "data" / "table.csv").write_bytes(b"old contents\n")
    dev.start()
    doc = {"operation": "file.download", "url": hold.url("table.csv"), "path": "data/table.csv",
           "sha256": hashlib.sha256(new).hexdigest(), "size": len(new)}  # fmt: skip
    dev.job("download-cut-1", doc)
    assert hold.holding.wait(10)
    dev.wait_journal(lambda j: j["phase"] == "file.fetch" and j.get("data", {}).get("offset", 0) > 0)
    assert (dev.root / "data" / "table.csv").read_bytes() == b"old contents\n"  # untouched so far
    dev.kill()
    hold.let_go()
    dev.start()
    done = dev.result("download-cut-1")
    assert done["status"] == "SUCCEEDED", done
    assert (dev.root / "data" / "table.csv").read_bytes() == new
    assert not (dev.root / "data" / "table.csv.part").exists()
    after_reset = hold.requests[-1]
    assert after_reset["start"] > 0 and after_reset["sent"] < len(new)  # a Range request for the rest
    assert dev.problems() == []
