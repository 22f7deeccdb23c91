"""Real resets: the unix board's reset ends the MicroPython process (status 75) and the next
process is the next boot. Reboot, OTA resume after a reset mid-download, OTA rollback."""

import hashlib
import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_micropython
from tests.host.fileserver import FileServer

DRIVER = ROOT / "tests" / "device" / "otadrive.py"
RESET = 75


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    served = FileServer(tmp_path_factory.mktemp("fileserver")).start()
    yield served
    served.stop()


def image(server: FileServer, name: str, size: int) -> str:
    block = bytes((i * 31 + size) & 0xFF for i in range(4096))
    data = bytearray()
    while len(data) < size:
        data += block
    data = bytes([0xE9]) + bytes(data[1:size])
    (server.files / name).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


class Device:
    """The simulated device's state folder and its boots."""

    def __init__(self, folder: Path, config: dict):
        self.state = folder / "state"
        self.state.mkdir()
        self.doc = folder / "doc.json"
        self.config = folder / "config.json"
        self.config.write_text(json.dumps(config))

    def boot(self, doc=None, heapsize=None, **env):
        if doc is not None:
            self.doc.write_text(json.dumps(doc))
        args = [str(DRIVER), str(self.state), str(self.doc), str(self.config)]
        proc = run_micropython(args, env={k: str(v) for k, v in env.items()}, heapsize=heapsize, timeout=60)
        assert proc.returncode in (0, RESET), proc.stdout + proc.stderr
        return proc.returncode

    def result(self) -> dict:
        return json.loads((self.state / "result.json").read_text())

    def otadata(self) -> dict:
        return json.loads((self.state / "simboard" / "otadata.json").read_text())


def ota_config(server: FileServer) -> dict:
    return {"https_ca": str(server.ca_der), "https_timeout_ms": 5000}


def ota_doc(server: FileServer, name: str, sha: str, size: int, version: str = "2.0.0") -> dict:
    url = f"https://localhost:{server.port}/{name}"
    return {"operation": "ota.firmware", "url": url, "sha256": sha, "size": size, "version": version}


def test_reboot_is_a_process_exit_and_the_next_boot_reports_the_reason(tmp_path):
    device = Device(tmp_path, {})
    assert device.boot({"operation": "system.reboot"}) == RESET
    assert not (device.state / "result.json").exists()
    assert device.boot() == 0
    result = device.result()
    assert result["status"] == "SUCCEEDED"
    assert result["details"] == {"step": "rebooted", "resetReason": "job job-1"}


def test_aws_reboot_template_reboots_too(tmp_path):
    device = Device(tmp_path, {})
    doc = {
        "version": "1.0",
        "steps": [{"action": {"name": "Reboot", "type": "runHandler", "input": {"handler": "reboot.sh"}}}],
    }
    assert device.boot(doc) == RESET
    assert device.boot() == 0
    assert device.result()["status"] == "SUCCEEDED"


def test_reset_mid_download_resumes_and_fetches_less_than_the_image(tmp_path, server):
    size = 1536 * 1024
    sha = image(server, "resume.bin", size)
    device = Device(tmp_path, ota_config(server))
    # checkpoints at 0, 64K, ... : the 13th journals 768 KiB, then the board resets
    assert device.boot(ota_doc(server, "resume.bin", sha, size), DRIVE_RESET_AT=13) == RESET
    before = len(server.requests())
    assert device.boot() == RESET  # resumed, verified, set_boot, reset into the new image
    after = [r for r in server.requests()[before:] if r["target"] == "/resume.bin"]
    fetched_after_reset = sum(r["sent"] for r in after)
    assert after[0]["start"] == 768 * 1024
    assert fetched_after_reset < size
    assert fetched_after_reset == size - 768 * 1024
    assert device.otadata()["boot"] == "ota_1"
    assert device.boot() == 0
    result = device.result()
    assert result["status"] == "SUCCEEDED", result
    assert result["details"] == {"version": "2.0.0", "previous": "1.0.0"}
    assert device.otadata()["slots"]["ota_1"]["state"] == "VALID"
    slot = (device.state / "simboard" / "ota_1.bin").read_bytes()[:size]
    assert hashlib.sha256(slot).hexdigest() == sha


def test_reset_before_mark_valid_rolls_back_and_the_old_image_reports_failed(tmp_path, server):
    size = 256 * 1024
    sha = image(server, "rollback.bin", size)
    device = Device(tmp_path, ota_config(server))
    assert device.boot(ota_doc(server, "rollback.bin", sha, size)) == RESET
    assert device.boot(DRIVE_CRASH=1) == RESET  # the new image dies before its self-test
    assert device.otadata()["slots"]["ota_1"]["state"] == "PENDING_VERIFY"
    assert device.boot() == 0  # the boot selection finds it still pending: ABORTED, previous slot
    assert device.otadata()["slots"]["ota_1"]["state"] == "ABORTED"
    assert device.result()["status"] == "FAILED"
    assert device.result()["details"] == {"reason": "rolled back"}
    assert device.otadata()["running"] == "ota_0"


def test_a_corrupted_image_is_never_booted(tmp_path, server):
    size = 128 * 1024
    image(server, "corrupt.bin", size)
    device = Device(tmp_path, ota_config(server))
    assert device.boot(ota_doc(server, "corrupt.bin", "ab" * 32, size)) == 0
    assert device.result()["details"]["reason"].startswith("sha256 mismatch")
    assert device.boot({"operation": "diag.echo"}) == 0
    assert device.result()["details"]["firmware"] == "1.0.0"
    assert device.otadata()["boot"] == "ota_0"


def test_unix_board_state_folder_from_the_environment(tmp_path):
    code = "import board; b = board.Board({}); b.pin('LED').value(1); print(b.root)"
    proc = run_micropython(["-c", code], env={"JOBS_BOARD_STATE": str(tmp_path / "dev")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "dev")
    assert (tmp_path / "dev" / "simboard" / "pins.log").read_text() == "LED 4 0 1\n"


def test_self_test_update_not_accepted_is_never_marked_valid_and_rolls_back(tmp_path, server):
    size = 128 * 1024
    sha = image(server, "refused.bin", size)
    device = Device(tmp_path, ota_config(server))
    assert device.boot(ota_doc(server, "refused.bin", sha, size)) == RESET
    assert device.boot(DRIVE_REFUSE=1) == RESET  # self-test update not accepted: reset, no mark-valid
    assert device.otadata()["slots"]["ota_1"]["state"] == "PENDING_VERIFY"
    assert (device.state / "simboard" / "reset.json").read_text().find("self-test") > 0
    assert device.boot() == 0
    assert device.otadata()["running"] == "ota_0"
    assert device.result()["status"] == "FAILED"
    assert device.result()["details"] == {"reason": "rolled back"}


def test_file_download_reset_mid_file_resumes_from_the_journaled_offset(tmp_path, server):
    size = 512 * 1024 + 100
    sha = image(server, "data.bin", size)
    device = Device(tmp_path, ota_config(server))
    url = f"https://localhost:{server.port}/data.bin"
    doc = {"operation": "file.download", "url": url, "path": "data/data.bin", "sha256": sha, "size": size}
    # checkpoints at 64K, 128K, 192K, 256K: the 4th journals 256 KiB, then the board resets
    assert device.boot(doc, DRIVE_RESET_AT=4) == RESET
    assert (device.state / "data" / "data.bin.part").exists()
    before = len(server.requests())
    assert device.boot() == 0
    after = [r for r in server.requests()[before:] if r["target"] == "/data.bin"]
    assert after[0]["start"] == 256 * 1024
    assert sum(r["sent"] for r in after) == size - 256 * 1024
    result = device.result()
    assert result["status"] == "SUCCEEDED", result
    assert result["details"] == {"path": "data/data.bin", "size": str(size)}
    assert hashlib.sha256((device.state / "data" / "data.bin").read_bytes()).hexdigest() == sha
    assert not (device.state / "data" / "data.bin.part").exists()


def test_file_download_resume_with_a_lost_part_starts_again(tmp_path, server):
    size = 200 * 1024
    sha = image(server, "lost.bin", size)
    device = Device(tmp_path, ota_config(server))
    url = f"https://localhost:{server.port}/lost.bin"
    doc = {"operation": "file.download", "url": url, "path": "lost.bin", "sha256": sha, "size": size}
    assert device.boot(doc, DRIVE_RESET_AT=2) == RESET
    (device.state / "lost.bin.part").unlink()
    before = len(server.requests())
    assert device.boot() == 0
    after = [r for r in server.requests()[before:] if r["target"] == "/lost.bin"]
    assert after[0]["start"] == 0
    assert device.result()["status"] == "SUCCEEDED", device.result()
    assert hashlib.sha256((device.state / "lost.bin").read_bytes()).hexdigest() == sha


def test_app_self_test_update_not_accepted_is_never_committed_and_rolls_back(tmp_path, server):
    source = b"VERSION = 'refused'\n"
    (server.files / "refused_app.py").write_bytes(source)
    url = f"https://localhost:{server.port}/refused_app.py"
    item = {"path": "app.py", "url": url, "sha256": hashlib.sha256(source).hexdigest(), "size": len(source)}
    device = Device(tmp_path, ota_config(server))
    assert device.boot({"operation": "ota.files", "version": "app-2", "files": [item]}) == RESET
    assert device.boot(DRIVE_REFUSE=1) == RESET  # self-test update not accepted: no commit
    assert "self-test" in (device.state / "simboard" / "reset.json").read_text()
    assert device.boot() == 0
    assert device.result()["status"] == "FAILED"
    assert device.result()["details"] == {"reason": "rolled back"}
