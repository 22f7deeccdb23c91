"""`make deploy ROMFS=1`: the library as a ROMFS image, written with `mpremote romfs deploy`.

The virtual board (tools/vboard.py) answers `mpremote romfs query|deploy` for real: by default it
has no ROMFS (as stock ESP32 firmware), with `romfs=<bytes>` it has a partition kept in a file,
mounted at /rom at boot as an ESP32 firmware built with ROMFS does. mpremote itself, the image
build and the Unix port's vfs.VfsRom are the real ones.
"""

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.host import test_deploy
from tools import deploy, mpenv
from tools.vboard import VirtualBoard

config_dir = test_deploy.config_dir  # fixtures: the provisioned folder, a small project tree
project = test_deploy.project

ROOT = Path(__file__).resolve().parents[2]


BOOT_RECORD = (
    "import sys, jobs, board\n"
    "open('booted.txt', 'w').write(' '.join((jobs.__file__, board.__file__, repr(sys.path))))\n"
)


def board_files(board) -> list[str]:
    return sorted(test_deploy.board_files(board))


def wait_for(path: Path, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return path.read_text() if path.exists() else ""


def test_the_library_goes_into_the_partition_and_the_board_runs_it_from_rom(config_dir, project, tmp_path):
    (project / "firmware" / "main.py").write_text(BOOT_RECORD)  # where the library was imported from
    with VirtualBoard(tmp_path / "board", romfs=128 * 1024) as board:
        result = deploy.deploy(board.port, config_dir, "unix", tmp_path / "stage", root=project, romfs=True)
        # only entry points and configuration are files; the library is in the image
        assert sorted(result["tree"]) == sorted(
            ["/boot.py", "/main.py", *("/" + f for f in deploy.CONFIG_FILES)]
        )
        assert board_files(board) == sorted(result["tree"])
        image = (tmp_path / "stage.romfs").read_bytes()
        assert image[:3] == b"\xd2\xcd\x31"  # a ROMFS image, byte for byte in the partition
        assert board.romfs_file.read_bytes()[: len(image)] == image
        booted = wait_for(board.root / "booted.txt")  # the deploy's reset ran main.py
        assert booted.startswith("/rom/lib/jobs/__init__.mpy /rom/lib/board.mpy ")
        assert booted.endswith("['', '.frozen', '/rom', '/rom/lib', '/lib']")


def test_a_board_without_a_romfs_partition_is_told_so_and_nothing_is_copied(config_dir, project, tmp_path):
    with VirtualBoard(tmp_path / "board") as board:
        with pytest.raises(deploy.DeployError) as refused:
            deploy.deploy(board.port, config_dir, "unix", tmp_path / "stage", root=project, romfs=True)
        assert board_files(board) == []
    message = refused.value.args[0]
    assert message.startswith(
        "the board has no ROMFS partition (mpremote romfs query: ROMFS is not enabled on this device)"
    )
    assert "or deploy without ROMFS=1" in message


def test_an_image_larger_than_the_partition_is_refused(config_dir, project, tmp_path):
    (project / "lib" / "jobs" / "big.py").write_text("DATA = " + repr(os.urandom(6000)) + "\n")
    with VirtualBoard(tmp_path / "board", romfs=4096) as board:
        with pytest.raises(
            deploy.DeployError, match=r"does not fit the board's ROMFS partition \(4096 bytes\)"
        ):
            deploy.deploy(board.port, config_dir, "unix", tmp_path / "stage", root=project, romfs=True)
        assert board_files(board) == []


def test_the_real_library_image_imports_in_place_on_the_unix_port(config_dir, tmp_path):
    tree = deploy.stage(config_dir, "unix", tmp_path / "stage")
    files, rest = deploy.romfs_split(tree)
    assert "/lib/jobs/engine.mpy" in files and "/lib/board.mpy" in files and "/main.py" in rest
    image = deploy.build_romfs(files, tmp_path / "stage")
    script = (
        "import sys, vfs\n"
        f"vfs.mount(vfs.VfsRom(open({str(image)!r}, 'rb').read()), '/rom')\n"
        f"sys.path[:] = ['/rom/lib', {str(ROOT / 'build' / 'deps')!r}]\n"
        "import jobs.engine, jobs.topics, board\n"
        "print(jobs.engine.__file__, board.__file__, jobs.topics.Topics('t1').subscriptions()[0].decode())\n"
    )
    ran = subprocess.run(
        [mpenv.micropython_binary(), "-c", script], capture_output=True, text=True, timeout=30, cwd=tmp_path
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.split() == [
        "/rom/lib/jobs/engine.mpy",
        "/rom/lib/board.mpy",
        "$aws/things/t1/jobs/notify-next",
    ]


@pytest.mark.parametrize(
    "output, size, why",
    [
        ("ROMFS is not enabled on this device\n", None, "ROMFS is not enabled on this device"),
        ("No ROMFS partitions available\n", None, "No ROMFS partitions available"),
        (
            "ROMFS0 partition has size 131072 bytes (32 blocks of 4096 bytes each)\n"
            "  Raw contents: d2:cd:31:... ...\n  ROMFS image size: 54561\n",
            131072,
            "",
        ),
        (
            "ROMFS0 partition has size 65536 bytes (1 blocks of 65536 bytes each)\n"
            "  Raw contents: ff:ff ...\n  Not a valid ROMFS\n",
            65536,
            "",
        ),
    ],
)
def test_romfs_query_answers_are_read(output, size, why):
    part = deploy.parse_romfs_query(output)
    assert (part.size, part.why) == (size, why)


def test_make_deploy_romfs_passes_the_option_and_it_excludes_a_frozen_library(config_dir, tmp_path):
    dry = subprocess.run(
        ["make", "-n", "deploy", "PORT=/dev/x", f"CONFIG={config_dir}", "ROMFS=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert "--romfs" in dry.stdout, dry.stdout + dry.stderr
    plain = subprocess.run(
        ["make", "-n", "deploy", "PORT=/dev/x", f"CONFIG={config_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert "--romfs" not in plain.stdout
    with pytest.raises(deploy.DeployError, match="exclude each other"):
        deploy.deploy("/dev/x", config_dir, out=tmp_path / "stage", romfs=True, frozen_library=True)
