"""End to end: every built-in operation, the AWS managed templates, a custom handler, an unknown
operation, and 200 queued jobs drained in order, each exactly once.

Real stand-in (mosquitto + mTLS, Jobs service, presigned-URL file server), firmware/main.py on the
MicroPython Unix port (tests/host/e2e.py).
"""

import hashlib
import json

import pytest

from tests.host.e2e import ROOT_CUSTOM_EXAMPLE, Rig, details, wait_until


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    rig = Rig(tmp_path_factory.mktemp("e2e-ops")).start()
    yield rig
    rig.stop()


@pytest.fixture(autouse=True)
def _switch_off(rig):
    yield
    rig.stop_devices()


def firmware_image(size: int, seed: int = 7) -> bytes:
    """Bytes that pass the unix board's set_boot() check (ESP image magic first)."""
    body = bytes((i * 31 + seed) & 0xFF for i in range(size))
    return b"\xe9" + body[1:]


def test_gpio_write_pulse_and_read(rig):
    dev = rig.provision("e2e-gpio")
    dev.set_input(34, 1)  # BUTTON reads high
    dev.start()
    wrote = dev.run("gpio-write", {"operation": "gpio.write", "pin": "RELAY1", "value": 1})
    assert wrote["status"] == "SUCCEEDED", wrote
    assert details(wrote) == {"pin": "RELAY1", "value": "1"}
    pulsed = dev.run("gpio-pulse", {"operation": "gpio.pulse", "pin": "LED", "value": 1, "ms": 1200})
    assert pulsed["status"] == "SUCCEEDED", pulsed
    assert details(pulsed) == {"pin": "LED", "value": "0", "ms": "1200"}
    # a pulse longer than a second reports progress on the way (versions: queued 1, start 2, ...)
    assert pulsed["versionNumber"] >= 4
    read = dev.run("gpio-read", {"operation": "gpio.read", "pin": "BUTTON"})
    assert read["status"] == "SUCCEEDED", read
    assert details(read) == {"pin": "BUTTON", "value": "1"}
    assert dev.pins_log() == ["RELAY1 25 0 1", "LED 4 0 1", "LED 4 1 0"]
    assert dev.problems() == []


def test_system_reboot_and_the_aws_reboot_template_really_reset_the_device(rig):
    dev = rig.device("e2e-reboot")
    rebooted = dev.run("reboot-1", {"operation": "system.reboot"})
    assert rebooted["status"] == "SUCCEEDED", rebooted
    assert details(rebooted) == {"step": "rebooted", "resetReason": "job reboot-1"}
    assert dev.sim.exits[:1] == [75] and dev.sim.boots == 2
    managed = dev.run("reboot-2", None, template="AWS-Reboot")
    assert managed["status"] == "SUCCEEDED", managed
    assert details(managed)["resetReason"] == "job reboot-2"
    assert dev.sim.boots == 3
    assert dev.problems() == []


def test_config_set_persists_and_applies_at_once(rig):
    dev = rig.device("e2e-config")
    done = dev.run("config-1", {"operation": "config.set", "values": {"max_document": 1024}})
    assert done["status"] == "SUCCEEDED", done
    assert details(done) == {"applied": "max_document"}
    assert dev.config()["max_document"] == 1024
    # the new limit holds for the very next job, without a reboot
    big = {"operation": "diag.echo", "message": "x" * 200, "pad": "y" * 1200}
    too_big = dev.run("config-2", big)
    assert too_big["status"] == "REJECTED", too_big
    assert details(too_big)["reason"].startswith("document too large (")
    assert details(too_big)["reason"].endswith(" > 1024)")
    refused = dev.run("config-3", {"operation": "config.set", "values": {"endpoint": "evil.example"}})
    assert refused["status"] == "REJECTED", refused  # the schema says no before anything runs
    assert details(refused) == {"reason": "endpoint: not remotely settable"}
    assert dev.config()["endpoint"] == "localhost"
    # telemetry was off (0); switched on remotely, it starts without a reboot
    sniffer = rig.sniffer("logi2/device/e2e-config")
    try:
        assert (
            dev.run("config-4", {"operation": "config.set", "values": {"telemetry_interval_s": 1}})["status"]
            == "SUCCEEDED"
        )
        topic, payload = sniffer.wait("logi2/device/e2e-config")[0]
        assert json.loads(payload)["jobs_ok"] >= 2
    finally:
        sniffer.stop()
    assert dev.sim.boots == 1
    assert dev.problems() == []


def test_diag_echo(rig):
    dev = rig.device("e2e-echo")
    echoed = dev.run("echo-1", {"operation": "diag.echo", "message": "hello\tworld"})
    assert echoed["status"] == "SUCCEEDED", echoed
    got = details(echoed)
    assert got["echo"] == "hello world"
    assert int(got["heapFree"]) > 0 and got["board"] == "unix"
    assert got["firmware"] == "1.0.0" and got["app"] == "none" and got["resetReason"] == "power on"


def test_ota_firmware_from_a_presigned_url_boots_the_new_image_and_marks_it_valid(rig):
    dev = rig.device("e2e-ota")
    image = firmware_image(96 * 1024)
    doc = {
        "operation": "ota.firmware",
        "url": rig.files("fw/fw-2.0.0.bin", image),
        "sha256": hashlib.sha256(image).hexdigest(),
        "size": len(image),
        "version": "2.0.0",
    }
    done = dev.run("ota-1", doc)
    assert done["status"] == "SUCCEEDED", done
    assert details(done) == {"version": "2.0.0", "previous": "1.0.0"}
    ota = dev.otadata()
    assert ota["running"] == "ota_1" and ota["slots"]["ota_1"]["state"] == "VALID"
    assert (dev.root / "simboard" / "ota_1.bin").read_bytes()[: len(image)] == image
    assert dev.sim.boots == 2
    echo = dev.run("ota-echo", {"operation": "diag.echo"})
    assert details(echo)["firmware"] == "2.0.0"
    again = dev.run("ota-2", doc)  # the same version again: nothing touched
    assert again["status"] == "FAILED" and details(again) == {"reason": "version 2.0.0 already running"}
    assert dev.problems() == []


def test_ota_files_swaps_the_application_after_a_reboot(rig):
    dev = rig.device("e2e-files")
    app = b"GREETING = 'hello from app-2'\n"
    data = b"a,b\n1,2\n"
    doc = {
        "operation": "ota.files",
        "version": "app-2",
        "files": [
            {"path": "app_hello.py", "url": rig.files("app2/app_hello.py", app),
             "sha256": hashlib.sha256(app).hexdigest(), "size": len(app)},
            {"path": "data/table.csv", "url": rig.files("app2/table.csv", data),
             "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)},
        ],
    }  # fmt: skip
    done = dev.run("files-1", doc)
    assert done["status"] == "SUCCEEDED", done
    assert details(done) == {"version": "app-2", "previous": "none"}
    state = json.loads((dev.root / "app" / "app.json").read_text())
    assert state["version"] == "app-2" and state["state"] == "VALID"
    folder = dev.root / "app" / state["dir"]
    assert (folder / "app_hello.py").read_bytes() == app
    assert (folder / "data" / "table.csv").read_bytes() == data
    assert details(dev.run("files-echo", {"operation": "diag.echo"}))["app"] == "app-2"
    bad = dict(doc, version="app-3")
    bad["files"] = [dict(doc["files"][0], sha256="00" * 32)]
    failed = dev.run("files-2", bad)
    assert failed["status"] == "FAILED", failed
    assert details(failed)["reason"].startswith("sha256 mismatch for ")
    assert json.loads((dev.root / "app" / "app.json").read_text())["version"] == "app-2"
    assert dev.problems() == []


def test_file_download_and_the_aws_download_file_template(rig):
    dev = rig.device("e2e-download")
    content = b"sensor,offset\nt1,0.5\n"
    sha = hashlib.sha256(content).hexdigest()
    url = rig.files("data/cal.csv", content)
    done = dev.run("dl-1", {"operation": "file.download", "url": url, "path": "data/cal.csv", "sha256": sha})
    assert done["status"] == "SUCCEEDED", done
    assert details(done) == {"path": "data/cal.csv", "size": str(len(content))}
    assert (dev.root / "data" / "cal.csv").read_bytes() == content
    # the Device Client's old form with our third argument (the file's SHA-256)
    old_form = {"operation": "download-file.sh", "args": [url, "data/cal2.csv", sha]}
    assert dev.run("dl-2", old_form)["status"] == "SUCCEEDED"
    assert (dev.root / "data" / "cal2.csv").read_bytes() == content
    # the bare managed template carries no hash: refused by design (docs/operations.md)
    managed = dev.run(
        "dl-3",
        None,
        template="AWS-Download-File",
        parameters={"downloadUrl": "https://localhost/x.csv", "filePath": "data/x.csv"},
    )
    assert managed["status"] == "REJECTED", managed
    assert details(managed) == {"reason": "sha256: required"}
    assert not (dev.root / "data" / "x.csv").exists()
    protected = dev.run(
        "dl-4", {"operation": "file.download", "url": url, "path": "config.json", "sha256": sha}
    )
    assert protected["status"] == "REJECTED"
    assert details(protected) == {"reason": "path: config.json is not writable by jobs"}
    assert dev.problems() == []


def test_a_custom_operation_from_handlers_py_in_the_device_root(rig):
    dev = rig.provision("e2e-custom")
    (dev.root / "handlers.py").write_text(ROOT_CUSTOM_EXAMPLE.read_text())
    dev.start()
    done = dev.run("custom-1", {"operation": "customJob", "otherInfo": "someValue"})
    assert done["status"] == "SUCCEEDED", done
    assert details(done) == {"otherInfo": "someValue", "handledBy": "customJob"}
    bad = dev.run("custom-2", {"operation": "customJob", "otherInfo": 5})
    assert bad["status"] == "REJECTED" and details(bad) == {"reason": "otherInfo: string expected"}


def test_a_handlers_py_that_takes_a_builtin_name_is_refused_at_boot_and_the_builtin_stays(rig):
    dev = rig.provision("e2e-override")
    (dev.root / "handlers.py").write_text(
        "from jobs import ops\n\n\n"
        "class Anything(ops.Op):\n"
        '    name = "gpio.write"\n'
        '    params = (ops.Param("pin", ops.ANY), ops.Param("value", ops.ANY))\n\n'
        "    def run(self, job):\n"
        '        return {"pin": "any"}\n\n\n'
        "ops.register(Anything())\n"
    )
    dev.start()
    dev.wait_log("main: handlers.py: ValueError: operation gpio.write is built in; "
                 "register(op, override=True) replaces it on purpose")  # fmt: skip
    done = dev.run("override-1", {"operation": "gpio.write", "pin": 6, "value": 1})
    assert done["status"] == "REJECTED", done
    assert details(done) == {"reason": "pin: 6 is a flash pin, never allowed"}
    assert dev.pins_log() == []


def test_unknown_operations_and_bad_pins_are_rejected_with_a_reason_and_move_nothing(rig):
    dev = rig.device("e2e-reject")
    cases = [
        ({"operation": "launch.rocket"}, "unsupported operation launch.rocket"),
        ({"pin": 4}, "operation missing"),
        ({"operation": "gpio.write", "pin": 6, "value": 1}, "pin: 6 is a flash pin, never allowed"),
        ({"operation": "gpio.write", "pin": "BUTTON", "value": 1}, "pin: BUTTON is an input"),
        ({"operation": "gpio.write", "pin": "LED", "value": 1, "colour": "red"}, "unknown parameter colour"),
        ({"version": "1.0", "steps": [{"action": {"type": "runCommand", "input": {}}}]},
         "unsupported handler runCommand"),
    ]  # fmt: skip
    for i, (doc, reason) in enumerate(cases):
        done = dev.run(f"reject-{i}", doc)
        assert done["status"] == "REJECTED", (doc, done)
        assert details(done) == {"reason": reason}
    assert dev.pins_log() == []
    assert dev.problems() == []


PULSE_PINS = ["LED", "RELAY1", "RELAY2", "RELAY3", "RELAY4"]
NUMBERS = {"LED": 4, "RELAY1": 25, "RELAY2": 26, "RELAY3": 27, "RELAY4": 32}


def test_200_queued_jobs_are_drained_in_order_each_exactly_once(rig):
    dev = rig.provision("e2e-drain")
    count = 200
    for i in range(count):
        pin = PULSE_PINS[i % len(PULSE_PINS)]
        dev.job(f"drain-{i:03d}", {"operation": "gpio.pulse", "pin": pin, "value": 1, "ms": 1})
    dev.start()
    last = dev.result(f"drain-{count - 1:03d}", timeout=90)
    assert last["status"] == "SUCCEEDED"
    executions = [dev.execution(f"drain-{i:03d}") for i in range(count)]
    assert [e["status"] for e in executions] == ["SUCCEEDED"] * count
    # one start-next and one final update each: never handed out or reported twice
    assert {(e["executionNumber"], e["versionNumber"]) for e in executions} == {(1, 3)}
    started = [e["startedAt"] for e in executions]
    assert started == sorted(started) and len(set(started)) == count
    expected = []
    for i in range(count):
        pin = PULSE_PINS[i % len(PULSE_PINS)]
        expected += [f"{pin} {NUMBERS[pin]} 0 1", f"{pin} {NUMBERS[pin]} 1 0"]
    assert dev.pins_log() == expected  # in order, each pulse exactly once
    wait_until(lambda: dev.journal() is None, 5, "the journal to be cleared")
    assert dev.problems() == []
