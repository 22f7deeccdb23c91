"""OTA self-test end to end: the simulated device (firmware/main.py, unix board) against the local
AWS IoT stand-in. A new image whose self-test IN_PROGRESS update is not accepted is never marked
valid; the next reset rolls back and the old image reports FAILED "rolled back"."""

import hashlib
import json
import time
from pathlib import Path

from tools.simdevice import SimDevice, provision
from tools.standin import StandIn

THING = "selftest-1"
URL = "${aws:iot:s3-presigned-url:https://s3.amazonaws.com/fw-bucket/fw/fw.bin}"


def until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not reached in {timeout} s: {what}")


def otadata(root: Path) -> dict:
    return json.loads((root / "simboard" / "otadata.json").read_text())


class Rig:
    """The stand-in, a provisioned simulated device, and an ota.firmware job for a 64 KiB image."""

    def __init__(self, tmp_path: Path, **config):
        self.image = bytes([0xE9]) + bytes((i * 7) & 0xFF for i in range(64 * 1024 - 1))
        self.aws = StandIn(tmp_path / "aws").start()
        self.root = tmp_path / "device"
        self.device = None
        identity = self.aws.thing(THING, "rsa")
        settings = {"thing_name": THING, "endpoint": "localhost", "port": self.aws.port}
        settings.update(telemetry_interval_s=0, request_timeout_ms=1000, retry_base_ms=100)
        settings.update(reconnect_min_ms=100, reconnect_max_ms=500, **config)
        provision(self.root, settings, self.aws.ca.cert_der, identity.cert_der, identity.key_der)
        (self.aws.files / "fw").mkdir(parents=True, exist_ok=True)
        (self.aws.files / "fw" / "fw.bin").write_bytes(self.image)

    def reboot_into_new_image_with(self, **faults):
        """Run the job on the old image up to its reboot; the new image powers on only once
        `faults` are in force in the service (SimDevice boots under its lock: held, the next
        boot waits)."""
        doc = {"operation": "ota.firmware", "url": URL, "sha256": hashlib.sha256(self.image).hexdigest()}
        doc.update(size=len(self.image), version="2.0.0")
        self.device = SimDevice(self.root).start()
        until(lambda: self.device.boots >= 1, 10, "the old image boots")
        with self.device._lock:
            self.aws.create_job("fw", doc, [THING], presigned_expires=600)
            until(lambda: self.details().get("step") == "rebooting", 20, "the old image reports rebooting")
            self.aws.set_faults(**faults)
            time.sleep(0.5)  # the service applies new settings within 0.2 s

    def execution(self) -> dict:
        return self.aws.describe_execution("fw", THING)

    def details(self) -> dict:
        details = self.execution().get("statusDetails") or {}
        return details.get("detailsMap", details)

    def close(self):
        if self.device is not None:
            self.device.stop()
        self.aws.stop()


def test_self_test_update_rejected_is_never_marked_valid_and_rolls_back(tmp_path):
    # no client retries and every 2nd request throttled: the new image's describe and its
    # self-test update are consecutive requests, so whichever describe gets through, the
    # self-test update after it is refused
    rig = Rig(tmp_path, retries=0)
    try:
        rig.reboot_into_new_image_with(throttle_every=2)
        reason = "reset reason: ota self-test: update not accepted"
        assert rig.device.wait_for(reason, 20), rig.device.output()[-2000:]
        rig.aws.set_faults()
        lines = rig.device.output().splitlines()
        refused = [line for line in lines if "rejected" in line and '"status":"IN_PROGRESS"' in line]
        assert any('"step":"self-test"' in line for line in refused), refused
        until(lambda: rig.execution().get("status") == "FAILED", 20, "the old image reports FAILED")
        assert rig.details() == {"reason": "rolled back"}
        assert otadata(rig.root)["running"] == "ota_0"
        assert otadata(rig.root)["slots"]["ota_1"]["state"] == "ABORTED"
        assert "self-test" not in json.dumps(rig.execution())  # never SUCCEEDED with it
    finally:
        rig.close()


def test_service_refusing_everything_after_the_reboot_never_marks_the_image_valid(tmp_path):
    rig = Rig(tmp_path, retries=1)
    try:
        # every request refused: the new image connects, but neither its describe nor any
        # update is accepted; it keeps its journal and waits, never marking itself valid
        rig.reboot_into_new_image_with(internal_error_rate=1.0)
        until(lambda: rig.device.boots >= 2, 10, "the new image boots")
        mark = len(rig.device.output())
        until(lambda: "refused (InternalError)" in rig.device.output()[mark:], 15, "refusals")
        assert otadata(rig.root)["running"] == "ota_1"
        assert otadata(rig.root)["slots"]["ota_1"]["state"] == "PENDING_VERIFY"
        rig.device.kill()  # the next reset (a power cycle), with the service answering again
        rig.aws.set_faults()
        rig.device.start()
        until(lambda: rig.execution().get("status") == "FAILED", 20, "the old image reports FAILED")
        assert rig.details() == {"reason": "rolled back"}
        assert otadata(rig.root)["running"] == "ota_0"
        assert otadata(rig.root)["slots"]["ota_1"]["state"] == "ABORTED"
    finally:
        rig.close()
