"""`make flash PORT=... CHIP=esp32|esp32s3|esp32c3 FIRMWARE=...`: MicroPython onto a chip with esptool v5.

1. The firmware file is checked with esptool's own `image-info`: it must be an ESP image, for the
   chip named (the chip id in the image header), with a valid checksum and hash. A file for
   another chip is refused before anything touches the board.
2. `esptool --chip <chip> --port <port> erase-flash` (leftover otadata can point at an empty slot).
3. `esptool --chip <chip> --port <port> --baud <baud> write-flash <offset> <firmware>` at the
   offset MicroPython's images are built for: 0x1000 on ESP32 and ESP32-S2, 0x0 on S3/C3/C6.
   No verify option is passed because none exists in esptool v5: write-flash always checks the
   MD5 of what it wrote ("Hash of data verified."); v4's `--verify` is gone.

--dry-run prints the commands after the checks, without running them.
"""

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tools.mpenv import venv_tool

# where MicroPython's combined firmware image goes (its board.json "flash_offset")
OFFSETS = {"esp32": 0x1000, "esp32s2": 0x1000, "esp32s3": 0x0, "esp32c3": 0x0, "esp32c6": 0x0}
DEFAULT_BAUD = 460800


class FlashError(Exception):
    """A problem the user must fix; args[0] is the sentence."""


def esptool() -> str:
    found = venv_tool("esptool")
    if not found:
        raise FlashError("esptool not found: run `make setup`")
    return found


def chip_of(name: str) -> str:
    """esptool's display name ("ESP32-S3") as a --chip value ("esp32s3")."""
    return name.lower().replace("-", "")


def image_chip(firmware: Path) -> str:
    """The chip esptool's `image-info` reports for `firmware`; FlashError if it is no valid image."""
    if not firmware.is_file():
        what = "is a folder, not a firmware file" if firmware.is_dir() else "does not exist"
        raise FlashError(f"firmware file {firmware} {what}")
    result = subprocess.run([esptool(), "image-info", str(firmware)], capture_output=True, text=True)
    output = result.stdout + result.stderr
    if result.returncode:
        reason = re.search(r"fatal error occurred: (.*)", output)
        detail = reason.group(1).strip() if reason else output.strip().splitlines()[-1]
        raise FlashError(f"{firmware} is not an ESP firmware image: esptool image-info says: {detail}")
    detected = re.search(r"Detected image type: (\S+)", output)
    if not detected:
        raise FlashError(f"esptool image-info did not report a chip for {firmware}:\n{output.strip()}")
    invalid = [line.strip() for line in output.splitlines() if "(invalid" in line]
    if invalid:
        raise FlashError(f"{firmware} is damaged: esptool image-info says {'; '.join(invalid)}")
    return chip_of(detected.group(1))


def commands(chip: str, port: str, firmware: Path, baud: int = DEFAULT_BAUD) -> list[list[str]]:
    """The esptool commands that erase the chip and write `firmware` at its offset."""
    if chip not in OFFSETS:
        raise FlashError(f"CHIP={chip!r} is not supported: use one of {', '.join(OFFSETS)}")
    if baud <= 0:
        raise FlashError(f"baud rate {baud} is not a positive number (default {DEFAULT_BAUD})")
    tool = esptool()
    return [
        [tool, "--chip", chip, "--port", port, "erase-flash"],
        [
            tool,
            "--chip",
            chip,
            "--port",
            port,
            "--baud",
            str(baud),
            "write-flash",
            hex(OFFSETS[chip]),
            str(firmware),
        ],
    ]


def plan(chip: str, port: str, firmware: Path, baud: int = DEFAULT_BAUD) -> list[list[str]]:
    """Check the image against the chip; return the commands to run."""
    steps = commands(chip, port, firmware, baud)
    found = image_chip(firmware)
    if found != chip:
        raise FlashError(
            f"{firmware} is an image for {found}, not for {chip}: download the {chip} firmware "
            "(https://micropython.org/download/) or set CHIP to match the board"
        )
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.flash", description="Erase a chip and write a MicroPython firmware image."
    )
    parser.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0")
    parser.add_argument("--chip", required=True, choices=sorted(OFFSETS))
    parser.add_argument("--firmware", required=True, type=Path, help="the .bin from micropython.org")
    parser.add_argument("--baud", type=int, default=DEFAULT_BAUD)
    parser.add_argument("--dry-run", action="store_true", help="check and print the commands only")
    args = parser.parse_args(argv)
    try:
        steps = plan(args.chip, args.port, args.firmware, args.baud)
        print(f"flash: {args.firmware} is a valid {args.chip} image (esptool image-info)")
        if not args.dry_run and not os.path.exists(args.port):
            raise FlashError(f"serial port {args.port} does not exist: is the board plugged in?")
    except FlashError as error:
        print(f"flash: {error}", file=sys.stderr)
        return 2
    for step in steps:
        shown = shlex.join(["esptool", *step[1:]])
        print("flash: " + shown, flush=True)
        if not args.dry_run and subprocess.run(step).returncode:
            print(f"flash: `{shown}` failed (see above)", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
