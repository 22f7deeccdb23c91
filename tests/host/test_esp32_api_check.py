"""`make typecheck`: device code is checked against the ESP32 port's API (pyright + stubs)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PYRIGHT = Path(sys.executable).parent / "pyright"


def _check(tmp_path, source):
    probe = ROOT / "lib" / f"_api_probe_{tmp_path.name}.py"
    probe.write_text(source)
    try:
        return subprocess.run(
            [str(PYRIGHT), "--project", str(ROOT / "pyrightconfig.json"), str(probe)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
        )
    finally:
        probe.unlink()


def test_a_call_the_esp32_port_lacks_fails(tmp_path):
    result = _check(tmp_path, "import machine\nmachine.Pin(4).toggle_twice()\n")
    assert result.returncode != 0
    assert '"toggle_twice" is unknown' in result.stdout


def test_esp32_calls_that_exist_pass(tmp_path):
    source = (
        "import esp32\nimport machine\nimport time\n"
        "machine.Pin(4, machine.Pin.OUT).value(1)\n"
        "esp32.Partition.find(esp32.Partition.TYPE_APP)[0].info()\n"
        "time.ticks_diff(time.ticks_ms(), 0)\n"
    )
    result = _check(tmp_path, source)
    assert result.returncode == 0, result.stdout
