"""`make flash`: esptool v5 commands per chip; esptool's own image-info refuses a wrong image.

The firmware files are real ESP images made offline by esptool itself, the way MicroPython's
build makes them: a tiny ELF (one IRAM section, written here) -> `esptool elf2image` ->
`esptool merge-bin --target-offset <offset>` with the image as bootloader and as app.
"""

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tools import flash

ESPTOOL = str(Path(sys.executable).parent / "esptool")
# (e_machine, an IRAM address) per chip: Xtensa 0x5E, RISC-V 0xF3
CHIPS = {"esp32": (0x5E, 0x40080000), "esp32s3": (0x5E, 0x40370000), "esp32c3": (0xF3, 0x40380000)}


def tiny_elf(machine: int, address: int) -> bytes:
    """An ELF32 with one executable section at `address` (enough for elf2image)."""
    code = bytes(range(64))
    names = b"\x00.iram0.text\x00.shstrtab\x00"
    header_size, program_header_size, section_header_size = 0x34, 0x20, 0x28
    code_at = header_size + program_header_size
    names_at = code_at + len(code)
    sections_at = (names_at + len(names) + 3) & ~3
    ident = b"\x7fELF\x01\x01\x01" + bytes(9)
    header = struct.pack(
        "<16sHHLLLLLHHHHHH",
        *(ident, 2, machine, 1, address, header_size, sections_at, 0),
        *(header_size, program_header_size, 1, section_header_size, 3, 2),
    )
    program = struct.pack("<8L", 1, code_at, address, address, len(code), len(code), 5, 4)
    body = header + program + code + names
    body += bytes(sections_at - len(body))
    null = bytes(section_header_size)
    text = struct.pack("<10L", 1, 1, 6, address, code_at, len(code), 0, 0, 4, 0)
    strtab = struct.pack("<10L", 13, 3, 0, 0, names_at, len(names), 0, 0, 1, 0)
    return body + null + text + strtab


def esptool(*args):
    result = subprocess.run([ESPTOOL, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def firmware(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("firmware")
    images = {}
    for chip, (machine, address) in CHIPS.items():
        elf = folder / f"{chip}.elf"
        elf.write_bytes(tiny_elf(machine, address))
        app = folder / f"{chip}-app.bin"
        esptool("--chip", chip, "elf2image", "-o", str(app), str(elf))
        offset = hex(flash.OFFSETS[chip])
        images[chip] = folder / f"{chip}-firmware.bin"
        esptool(
            *("--chip", chip, "merge-bin", "-o", str(images[chip]), "--target-offset", offset),
            *(offset, str(app), "0x10000", str(app)),
        )
    return images


@pytest.mark.parametrize("chip, offset", [("esp32", "0x1000"), ("esp32s3", "0x0"), ("esp32c3", "0x0")])
def test_erase_then_write_at_the_chip_offset(firmware, chip, offset):
    steps = flash.plan(chip, "/dev/ttyUSB0", firmware[chip])
    assert [step[1:] for step in steps] == [
        ["--chip", chip, "--port", "/dev/ttyUSB0", "erase-flash"],
        [
            "--chip",
            chip,
            "--port",
            "/dev/ttyUSB0",
            "--baud",
            "460800",
            "write-flash",
            offset,
            str(firmware[chip]),
        ],
    ]
    assert all(Path(step[0]).name == "esptool" for step in steps)


def test_the_generated_images_are_what_esptool_says(firmware):
    assert {chip: flash.image_chip(path) for chip, path in firmware.items()} == {
        "esp32": "esp32",
        "esp32s3": "esp32s3",
        "esp32c3": "esp32c3",
    }


@pytest.mark.parametrize("chip, image", [("esp32", "esp32c3"), ("esp32s3", "esp32"), ("esp32c3", "esp32s3")])
def test_an_image_for_another_chip_is_refused(firmware, chip, image):
    with pytest.raises(flash.FlashError, match=f"is an image for {image}, not for {chip}"):
        flash.plan(chip, "/dev/ttyUSB0", firmware[image])


def test_a_file_that_is_no_image_is_refused(tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("not firmware\n")
    with pytest.raises(flash.FlashError, match="is not an ESP firmware image: esptool image-info says: "):
        flash.image_chip(junk)


def test_a_damaged_image_is_refused(firmware, tmp_path):
    damaged = bytearray(firmware["esp32"].read_bytes())
    damaged[40] ^= 0xFF  # inside the first segment's data
    path = tmp_path / "damaged.bin"
    path.write_bytes(damaged)
    with pytest.raises(flash.FlashError, match=r"is damaged: .*Checksum.*invalid"):
        flash.image_chip(path)


def test_command_line_dry_run_and_refusal(firmware, capsys):
    assert (
        flash.main(
            ["--port", "/dev/ttyUSB0", "--chip", "esp32", "--firmware", str(firmware["esp32"]), "--dry-run"]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"flash: {firmware['esp32']} is a valid esp32 image (esptool image-info)",
        "flash: esptool --chip esp32 --port /dev/ttyUSB0 erase-flash",
        "flash: esptool --chip esp32 --port /dev/ttyUSB0 --baud 460800 write-flash 0x1000 "
        + str(firmware["esp32"]),
    ]
    code = flash.main(["--port", "/dev/ttyUSB0", "--chip", "esp32", "--firmware", str(firmware["esp32c3"])])
    assert code == 2
    assert "is an image for esp32c3, not for esp32" in capsys.readouterr().err


def test_missing_port_is_named_before_esptool_runs(firmware, capsys):
    code = flash.main(
        ["--port", "/dev/no-such-port", "--chip", "esp32s3", "--firmware", str(firmware["esp32s3"])]
    )
    assert code == 2
    assert "serial port /dev/no-such-port does not exist" in capsys.readouterr().err


def test_make_flash_as_in_docs_tooling(firmware):
    """`make flash` as docs/tooling.md shows it, with --dry-run (there is no chip here)."""
    result = subprocess.run(
        [
            *("make", "-s", "flash", "PORT=/dev/ttyUSB0", "CHIP=esp32s3"),
            *(f"FIRMWARE={firmware['esp32s3']}", "FLASH_ARGS=--dry-run"),
        ],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "write-flash 0x0 " in result.stdout
