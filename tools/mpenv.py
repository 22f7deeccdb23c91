"""Where the MicroPython Unix port is, and the module path device code runs with on the host."""

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# what device code imports on the host: the library, the simulated board (and the DevKitC pin
# table it shares with boards/esp32, whose board.py it shadows), fetched umqtt.simple
DEVICE_PATH = (ROOT / "lib", ROOT / "boards" / "unix", ROOT / "boards" / "esp32", ROOT / "build" / "deps")


def micropython_binary() -> str:
    """MICROPYTHON from the environment, else the venv's `micropython`, else the one on PATH."""
    explicit = os.environ.get("MICROPYTHON")
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "micropython"
    return str(beside) if beside.exists() else (shutil.which("micropython") or "micropython")


def micropypath(*first: Path | str) -> str:
    """MICROPYPATH: `first`, then `.frozen` (ssl lives there, and comes early as on the ESP32),
    then the device library, the unix board and the fetched dependencies."""
    return ":".join([*(str(p) for p in first), ".frozen", *(str(p) for p in DEVICE_PATH)])
