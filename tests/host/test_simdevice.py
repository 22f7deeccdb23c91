"""The simulated device boots as a chip would (firmware/main.py, unix board, tools/simdevice.py):
what a reset cannot cure (a bad config.json, a missing certificate) halts with its message after
rolling back a pending OTA image; what a retry or a reset may cure (Wi-Fi, time sync, the TLS
setup, an unexpected exception) is retried and ends in a reset, never at the REPL; development
mode arms no watchdog and halts instead; the runner exits with the firmware's status."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools.simdevice import EXIT_HALT, EXIT_RESET, SimDevice, provision
from tools.standin import StandIn

ROOT = Path(__file__).resolve().parents[2]
CONFIG = {"thing_name": "sim", "endpoint": "localhost", "port": 1}


def write_config(root: Path, **settings) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({**CONFIG, **settings}))
    return root


def garbage_certs(root: Path) -> None:
    """Certificate files that exist but that mbedTLS refuses (ValueError: invalid cert)."""
    (root / "certs").mkdir(parents=True, exist_ok=True)
    for name in ("ca.cert.der", "device.cert.der", "device.key.der"):
        (root / "certs" / name).write_bytes(b"not DER")


def run(root: Path, timeout: float = 30) -> SimDevice:
    """Power on and wait until the device stops by itself (a halt); its exits and log."""
    device = SimDevice(root).start()
    device._thread.join(timeout)
    alive = device._thread.is_alive()
    device.stop()
    assert not alive, f"still booting after {timeout} s:\n{device.output()}"
    return device


def until(device: SimDevice, condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not reached in {timeout} s: {what}\n{device.output()}"
        time.sleep(0.05)


def otadata(root: Path) -> dict:
    return json.loads((root / "simboard" / "otadata.json").read_text())


def pending_firmware(root: Path, previous: str | None = "ota_0") -> None:
    """ota.firmware's state just before its reboot: ota_1 (2.0.0) selected, not yet booted."""
    (root / "simboard").mkdir(parents=True, exist_ok=True)
    slots = {"ota_0": {"state": "VALID", "version": "1.0.0"}, "ota_1": {"state": "NEW", "version": "2.0.0"}}
    data = {"boot": "ota_1", "previous": previous, "slots": slots}
    (root / "simboard" / "otadata.json").write_text(json.dumps(data))


def test_bad_config_halts_with_the_key_named_and_the_command_exits_with_its_status(tmp_path):
    root = write_config(tmp_path / "dev", port="x")
    device = run(root)
    assert device.exits == [EXIT_HALT] and device.halted  # not booting again into the same error
    out = device.output()
    assert "main: config.json: config key 'port': must be an integer 1..65535" in out
    assert "main: halted; fix it at the REPL" in out and "watchdog armed" not in out
    result = subprocess.run(
        [sys.executable, "-m", "tools.simdevice", str(root)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == EXIT_HALT, result
    assert (
        result.stderr.strip() == f"simdevice: halted (exit 78): fix what it names in {root}, then start again"
    )


def test_a_missing_certificate_halts_naming_the_resolved_path(tmp_path, monkeypatch):
    root = write_config(tmp_path / "dev")
    monkeypatch.chdir(tmp_path)  # a relative folder, as `python -m tools.simdevice dev/` gets
    device = run(Path("dev"))
    assert device.exits == [EXIT_HALT], device.output()
    assert f"main: cannot read {root}/certs/ca.cert.der (ca in config.json)" in device.output()  # not doubled
    assert "Traceback" not in device.output()


def boot_log_until(root: Path, text: str, timeout: float = 20) -> str:
    """Boot `root` from a fresh log until `text` shows in it; the log."""
    (root / "device.log").unlink(missing_ok=True)
    device = SimDevice(root).start()
    try:
        until(device, lambda: text in device.output(), timeout, text)
        return device.output()
    finally:
        device.stop()


def test_handlers_py_a_syntax_error_names_its_line_an_exception_prints_its_traceback(tmp_path):
    root = write_config(tmp_path / "dev", boot_timeout_ms=1000)
    garbage_certs(root)
    (root / "handlers.py").write_text("from jobs import ops\n\n\ndef broken(:\n    pass\n")
    out = boot_log_until(root, "TLS setup")  # the boot went on after it
    assert "main: handlers.py: SyntaxError: invalid syntax; its operations are not registered" in out
    assert f'File "{root}/handlers.py", line 4\nSyntaxError: invalid syntax' in out
    (root / "handlers.py").write_text("def helper():\n    return 1 / 0\n\n\nhelper()\n")
    out = boot_log_until(root, "TLS setup")
    assert "main: handlers.py: ZeroDivisionError: divide by zero; its operations are not registered" in out
    assert f'File "{root}/handlers.py", line 5, in <module>' in out  # the traceback, to the line
    assert f'File "{root}/handlers.py", line 2, in helper' in out


def test_a_tls_setup_failure_is_retried_with_backoff_then_the_board_resets(tmp_path):
    root = write_config(tmp_path / "dev", boot_timeout_ms=5000)
    garbage_certs(root)
    device = SimDevice(root).start()
    try:
        until(
            device,
            lambda: "reset reason: boot: TLS setup failed" in device.output(),
            30,
            "a reset, a 2nd boot",
        )
    finally:
        device.stop()
    assert device.exits[0] == EXIT_RESET, device.output()
    first = device.output().split("--- boot 2 ---")[0]
    assert "main: watchdog armed, 120000 ms" in first
    retries = [
        line for line in first.splitlines() if "main: TLS setup: ValueError: invalid cert - retry in" in line
    ]
    waits = [int(line.split("retry in ")[1].split()[0]) for line in retries]
    # jobs.clock.backoff_ms: 1 s doubling per try, jitter in [d/2, d]
    assert len(waits) >= 2 and all(500 << i <= w <= 1000 << i for i, w in enumerate(waits)), first
    assert "main: resetting in 3 s (Ctrl-C for the REPL): boot: TLS setup failed" in first


def test_an_unexpected_exception_after_config_loaded_resets(tmp_path):
    root = write_config(tmp_path / "dev")
    garbage_certs(root)
    # a handler that breaks the engine's builder: not an error the boot retries
    boom = "def boom(cfg, board):\n    raise RuntimeError('bug')\n"
    (root / "handlers.py").write_text(f"from jobs import engine\n\n\n{boom}\n\nengine.build = boom\n")
    device = SimDevice(root).start()
    try:
        until(
            device, lambda: "reset reason: main: RuntimeError" in device.output(), 20, "a reset, a 2nd boot"
        )
    finally:
        device.stop()
    assert device.exits[0] == EXIT_RESET
    out = device.output()
    assert "main: unexpected RuntimeError: bug" in out and "Traceback" in out


def test_an_import_error_after_config_loaded_halts_a_reset_would_not_cure_it(tmp_path):
    root = write_config(tmp_path / "dev")
    garbage_certs(root)
    boom = "def boom(cfg, board):\n    raise ImportError(\"no module named 'umqtt'\")\n"
    (root / "handlers.py").write_text(f"from jobs import engine\n\n\n{boom}\n\nengine.build = boom\n")
    device = run(root)
    assert device.exits == [EXIT_HALT], device.output()
    assert "main: stopped by the error above (a reset would not cure it)" in device.output()


def test_network_and_time_sync_failures_end_in_a_reset_and_the_cured_boot_connects(tmp_path):
    with StandIn(tmp_path / "aws") as aws:
        identity = aws.thing("boot-net", "rsa")
        root = tmp_path / "dev"
        settings = {
            "thing_name": "boot-net",
            "endpoint": "localhost",
            "port": aws.port,
            "boot_timeout_ms": 1500,
        }
        provision(
            root, dict(settings, telemetry_interval_s=0), aws.ca.cert_der, identity.cert_der, identity.key_der
        )
        fault = root / "simboard" / "network.json"
        fault.parent.mkdir(parents=True, exist_ok=True)
        fault.write_text(json.dumps({"ntp": True}))
        device = SimDevice(root).start()
        try:
            until(device, lambda: device.boots >= 2, 20, "the silent time server ends in a reset")
            fault.write_text(json.dumps({"wifi": "STAT_NO_AP_FOUND"}))
            until(device, lambda: device.boots >= 3, 20, "no Wi-Fi ends in a reset")
            fault.unlink()
            until(device, lambda: "engine: connected" in device.output(), 20, "the cured boot connects")
        finally:
            device.stop()
    out = device.output()
    assert device.exits[:2] == [EXIT_RESET, EXIT_RESET], out
    assert "main: network: OSError: time sync: no answer from pool.ntp.org - retry in" in out
    assert "main: network: OSError: Wi-Fi '': no connection within 30000 ms, status STAT_NO_AP_FOUND" in out
    assert "main: resetting in 3 s (Ctrl-C for the REPL): boot: network failed" in out and "halted" not in out


def test_a_halt_rolls_back_a_pending_firmware_image_first(tmp_path):
    root = write_config(tmp_path / "dev", port="x")
    pending_firmware(root)
    device = run(root)
    assert device.exits == [EXIT_RESET, EXIT_HALT], device.output()
    first, second = device.output().split("--- boot 2 ---")
    assert "main: rolling back the pending firmware 2.0.0 first" in first
    assert "reset reason: rollback: firmware 2.0.0" in second and "main: halted" in second
    data = otadata(root)
    assert (data["running"], data["slots"]["ota_1"]["state"]) == ("ota_0", "ABORTED")


def test_a_halt_rolls_back_a_pending_application_first(tmp_path):
    root = write_config(tmp_path / "dev")  # no certificates: a halt
    app = root / "app" / "app.json"
    app.parent.mkdir(parents=True)
    app.write_text(
        json.dumps({"dir": "b", "version": "2", "state": "NEW", "previous": "a", "previousVersion": "1"})
    )
    device = run(root)
    assert device.exits == [EXIT_RESET, EXIT_HALT], device.output()
    assert "main: rolling back the pending application 2 first" in device.output()
    state = json.loads(app.read_text())
    assert (state["dir"], state["version"], state["state"], state["rolledBack"]) == ("a", "1", "VALID", "b")


def test_a_pending_image_that_cannot_come_up_is_rolled_back_by_the_reset(tmp_path):
    root = write_config(tmp_path / "dev", boot_timeout_ms=1000)
    garbage_certs(root)
    pending_firmware(root)
    (root / "simboard" / "network.json").write_text(json.dumps({"wifi": "STAT_NO_AP_FOUND"}))
    device = SimDevice(root).start()
    try:
        until(device, lambda: "--- boot 2 ---" in device.output() and otadata(root).get("running") == "ota_0",
              20, "the reset after the failed boot, into the previous image")  # fmt: skip
    finally:
        device.stop()
    assert device.exits[0] == EXIT_RESET
    assert "main: resetting in 3 s (Ctrl-C for the REPL): boot: network failed" in device.output()
    assert otadata(root)["slots"]["ota_1"]["state"] == "ABORTED"


def test_an_image_that_stays_pending_after_the_rollback_reset_halts_rather_than_looping(tmp_path):
    root = write_config(tmp_path / "dev", port="x")
    pending_firmware(root, previous=None)  # a bootloader that cannot go back
    device = run(root)
    assert device.exits == [EXIT_RESET, EXIT_HALT], device.output()


@pytest.mark.parametrize("how", ["devmode file", "BOOT held"])
def test_development_mode_arms_no_watchdog_and_halts_instead_of_resetting(tmp_path, how):
    root = write_config(tmp_path / "dev", boot_timeout_ms=1000)
    garbage_certs(root)
    if how == "devmode file":
        (root / "devmode").write_text("")
    else:
        (root / "simboard").mkdir()
        (root / "simboard" / "pins.json").write_text(json.dumps({"0": 0}))
    device = run(root)
    assert device.exits == [EXIT_HALT], device.output()
    out = device.output()
    said = "a devmode file" if how == "devmode file" else "BOOT held"
    assert f"main: development mode ({said}): no watchdog" in out and "watchdog armed" not in out
    assert "main: boot: TLS setup failed (development mode: no reset)" in out


def test_an_argument_micropython_refuses_is_one_sentence_not_a_restart_loop(tmp_path):
    root = write_config(tmp_path / "dev")
    result = subprocess.run(
        [sys.executable, "-m", "tools.simdevice", str(root), "--heapsize", "abc"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "simdevice: MicroPython refused to start with --heapsize abc: Invalid command line arguments. "
        "Use -h option for help."
    ]
    assert not (root / "device.log").exists()  # it never booted


def test_ctrl_c_stops_it_quietly_and_the_firmware_with_it(tmp_path):
    root = write_config(tmp_path / "dev", boot_timeout_ms=60000)
    garbage_certs(root)  # the boot retries for a minute: a device busy when Ctrl-C comes
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.simdevice", str(root)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        log = root / "device.log"
        deadline = time.monotonic() + 20
        while "TLS setup" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, (out, err)
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err, (out, err)
    assert "interrupted" not in out  # the firmware never saw the Ctrl-C: it was stopped
    assert "--- boot 2 ---" not in log.read_text()  # and not booted again
