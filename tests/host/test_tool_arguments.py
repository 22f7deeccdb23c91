"""Every host tool answers a bad argument in one line and a non-zero exit status, never a traceback."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    folder = tmp_path_factory.mktemp("arguments")
    (folder / "a-file").write_text("not a folder\n")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    yield {"file": folder / "a-file", "under-file": folder / "a-file" / "x", "dir": folder, "busy": busy}
    busy.close()


# (tool arguments, environment changes, exit status, what the one line says); {file}, {under-file},
# {dir} and {busy} are filled in from the fixture
CASES = [
    (["tools.vboard", "--root", "{file}"], {}, 2,
     "vboard: cannot use {file} as the board's filesystem: it is not a folder"),
    (["tools.vboard", "--root", "{under-file}"], {}, 2,
     "vboard: cannot use {under-file} as the board's filesystem: Not a directory"),
    (["tools.vboard", "--root", "{dir}/vb"], {"MICROPYTHON": "/nonexistent/micropython"}, 2,
     "vboard: the MicroPython Unix port /nonexistent/micropython was not found"),
    (["tools.flash", "--port", "/dev/x", "--chip", "esp32", "--firmware", "{dir}"], {}, 2,
     "flash: firmware file {dir} is a folder, not a firmware file"),
    (["tools.flash", "--port", "/dev/x", "--chip", "esp32", "--firmware", "{file}", "--baud", "0"], {}, 2,
     "flash: baud rate 0 is not a positive number"),
    (["tools.build", "--out", "{file}"], {}, 2, "build: cannot write {file}"),
    (["tools.run", "--state", "{under-file}"], {}, 1, "make run: {under-file}"),
    (["tools.standin", "up", "--state", "{under-file}"], {}, 1, "error: {under-file}"),
    (["tools.standin", "up", "--state", "{dir}/st", "--port", "{busy}"], {}, 1,
     "--port {busy} is in use on 127.0.0.1: choose another, or 0 for a free one"),
    (["tools.standin", "up", "--state", "{dir}/st", "--control-port", "70000"], {}, 1,
     "--control-port 70000 is not a TCP port number"),
    (["tools.standin", "create-job", "j", "--state", "{dir}/none", "--thing", "t"], {}, 1,
     "no stand-in state in {dir}/none: run `"),
    (["tools.deploy", "--port", "/dev/no-such-port", "--config", "{dir}"], {}, 2,
     "deploy: {dir}/config.json: cannot read it"),
    (["tools.provision", "--thing", "t", "--endpoint", "localhost", "--cert", "{file}", "--key", "{file}",
      "--ca", "{file}", "--board", "unix", "--out", "{dir}/p"], {}, 2,
     "provision: device certificate: {file} is not"),
]  # fmt: skip


@pytest.mark.parametrize("args, env, status, expected", CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_a_bad_argument_gets_one_line_and_a_non_zero_status(places, args, env, status, expected):
    values = {
        k: (str(v) if not isinstance(v, socket.socket) else str(v.getsockname()[1]))
        for k, v in places.items()
    }
    filled = [a.format(**values) for a in args]
    result = subprocess.run(
        [sys.executable, "-m", *filled], cwd=ROOT, env=dict(os.environ, **env),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == status, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert expected.format(**values) in result.stderr, result.stderr
    if not args[0].endswith("provision"):  # provision lists each problem on its own line
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_board_process_that_cannot_start_says_why(tmp_path):
    """A frozen module that is not there: the board's MicroPython ends at once, and its words are shown."""
    result = subprocess.run(
        [sys.executable, "-m", "tools.vboard", "--root", str(tmp_path / "vb"), "--frozen", "no_such_module"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "ended before it was ready: ImportError: no module named 'no_such_module'" in result.stderr
