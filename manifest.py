# Freezes the jobs library and the board's modules into a custom MicroPython firmware image.
# Frozen bytecode runs from flash (no RAM for code objects) and `.frozen` comes before /lib.
#
# Build (needs the ESP-IDF toolchain; not runnable in this project's test environment):
#   cd micropython/ports/esp32
#   make BOARD=ESP32_GENERIC BOARD_VARIANT=OTA FROZEN_MANIFEST=/abs/path/to/this/manifest.py
# JOBS_BOARD=<folder under boards/> picks the board (default esp32). Details: docs/tooling.md.
#
# MicroPython's tools/manifestfile.py runs this file with the current directory set to the
# folder it is in and provides include(), package() and module().
import importlib.util
import os
from pathlib import Path

_board = os.environ.get("JOBS_BOARD", "esp32")
_board_dir = os.path.join("boards", _board)
if not os.path.isdir(_board_dir):
    raise ValueError("JOBS_BOARD=" + _board + ": there is no folder " + _board_dir)

# the port's own manifest keeps umqtt.simple (>= 1.4), ssl, mip, ntptime ... frozen as usual
include("$(PORT_DIR)/boards/manifest.py")  # noqa: F821
package("jobs", base_path="lib")  # noqa: F821
# the board's modules and those they import from a sibling board folder (tools/boardfiles.py)
_spec = importlib.util.spec_from_file_location("boardfiles", os.path.join("tools", "boardfiles.py"))
_boardfiles = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_boardfiles)
for _file in _boardfiles.board_modules(Path("boards"), _board):
    module(_file.name, base_path=str(_file.parent))  # noqa: F821
