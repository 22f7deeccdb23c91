"""Which files make up a board on the device: used by tools/deploy.py and manifest.py.

Standard library only, because manifest.py runs inside MicroPython's own build (makemanifest).
A board is its folder boards/<name>/*.py plus the modules those import from a sibling board
folder (boards/esp32s3/board.py imports espboard from boards/esp32). Nothing from boards/unix
goes to a device unless that is the board.
"""

import ast
from pathlib import Path


def _imported(source: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def board_modules(boards: Path, board: str) -> list[Path]:
    """The .py files to install for `board` (folder under `boards`), each as a top-level module."""
    files = sorted((boards / board).glob("*.py"))
    names = {p.stem for p in files}
    pending = list(files)
    while pending:
        for name in sorted(_imported(pending.pop()) - names):
            for other in sorted(boards.glob(f"*/{name}.py")):
                if other.parent.name in (board, "unix"):
                    continue
                files.append(other)
                names.add(name)
                pending.append(other)
                break
    return files
