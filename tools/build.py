"""Compile every device module to .mpy with mpy-cross (a compile error fails the build).

lib/ -> build/mpy/lib, boards/<name>/ -> build/mpy/boards/<name>, firmware/ -> build/mpy/firmware.
The device's boot.py and main.py are deployed as source; they are compiled here only so that a
syntax error in them also fails the build.
"""

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from tools.mpenv import venv_tool

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("lib", "boards", "firmware")


def mpy_cross() -> str:
    found = venv_tool("mpy-cross")
    if not found:
        raise SystemExit("build: mpy-cross not found: run `make setup`")
    return found


def one_line(error: str) -> str:
    """mpy-cross's error (a traceback naming the file and line) as `line N: SyntaxError: ...`."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    if not lines:
        return "mpy-cross failed without a message"
    where = re.search(r", line (\d+)", error)
    return f"line {where.group(1)}: {lines[-1]}" if where else lines[-1]


def compile_error(source: Path, name: str | None = None) -> str | None:
    """None if mpy-cross compiles `source`, else its error in one line (`line N: SyntaxError: ...`)."""
    with tempfile.TemporaryDirectory() as scratch:
        command = [mpy_cross(), "-o", str(Path(scratch) / "out.mpy"), "-s", name or source.name, str(source)]
        result = subprocess.run(command, capture_output=True, text=True)
    return one_line(result.stderr or result.stdout) if result.returncode else None


def device_sources(root: Path = ROOT):
    for top in SOURCES:
        yield from sorted(p for p in (root / top).rglob("*.py") if "__pycache__" not in p.parts)


def build(out: Path, march: str | None = None, root: Path = ROOT, sources=None) -> list[Path]:
    """Compile all device sources under `root` (or just `sources`) into `out`; return the .mpy files."""
    compiler, written, errors = mpy_cross(), [], []
    for source in device_sources(root) if sources is None else sources:
        relative = source.relative_to(root)
        target = (out / relative).with_suffix(".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        command = [compiler, "-o", str(target), "-s", str(relative)]
        if march:
            command.append(f"-march={march}")
        result = subprocess.run([*command, str(source)], capture_output=True, text=True)
        if result.returncode:
            errors.append(f"{relative} {one_line(result.stderr or result.stdout)}")
        else:
            written.append(target)
    if errors:
        raise SystemExit("build failed:\n" + "\n".join(errors))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compile device modules to .mpy.")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "mpy", help="output folder")
    parser.add_argument(
        "--march",
        choices=("xtensawin", "rv32imc", "x64"),
        help="only needed for native code: xtensawin (ESP32/S3), rv32imc (C3)",
    )
    args = parser.parse_args(argv)
    try:
        written = build(args.out, args.march)
    except OSError as error:
        print(f"build: cannot write {error.filename or args.out}: {error.strerror or error}", file=sys.stderr)
        return 2
    total = sum(p.stat().st_size for p in written)
    print(f"build: {len(written)} modules, {total} bytes of .mpy in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
