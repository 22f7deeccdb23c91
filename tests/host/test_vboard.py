"""The virtual board speaks mpremote's serial protocol over a pty, over a folder as filesystem.

Protocol details are checked byte by byte on the pty; then the real mpremote drives it.
"""

import os
import select
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools.vboard import VirtualBoard

ROOT = Path(__file__).resolve().parents[2]
MPREMOTE = str(Path(sys.executable).parent / "mpremote")


class Serial:
    """The host end of the pty, as a serial port opened by a tool."""

    def __init__(self, port: str):
        self.fd = os.open(port, os.O_RDWR | os.O_NOCTTY)

    def write(self, data: bytes):
        os.write(self.fd, data)

    def read_until(self, ending: bytes, timeout: float = 10) -> bytes:
        data = b""
        deadline = time.monotonic() + timeout
        while not data.endswith(ending):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.fd], [], [], max(left, 0))
            if not ready:
                raise AssertionError(f"timed out waiting for {ending!r}; got {data!r}")
            data += os.read(self.fd, 1)
        return data

    def read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            data += self.read_until(b"", timeout=10) or os.read(self.fd, n - len(data))
        return data

    def close(self):
        os.close(self.fd)


@pytest.fixture
def board(tmp_path):
    with VirtualBoard(tmp_path / "board") as vb:
        yield vb


@pytest.fixture
def serial(board):
    port = Serial(board.port)
    port.write(b"\r\x03")
    port.write(b"\r\x01")
    port.read_until(b"raw REPL; CTRL-B to exit\r\n>")
    yield port
    port.close()


def raw_exec(serial: Serial, code: bytes) -> tuple[bytes, bytes]:
    serial.write(code + b"\x04")
    assert serial.read(2) == b"OK"
    out = serial.read_until(b"\x04")[:-1]
    err = serial.read_until(b"\x04")[:-1]
    serial.read_until(b">")
    return out, err


def mpremote(board, *args, timeout=20):
    return subprocess.run(
        [MPREMOTE, "connect", board.port, *args], capture_output=True, text=True, timeout=timeout
    )


def test_the_board_is_a_pty(board):
    assert board.port.startswith("/dev/pts/")


def test_raw_repl_exec_output_and_error_framing(serial):
    out, err = raw_exec(serial, b"print(6 * 7)")
    assert (out, err) == (b"42\n", b"")
    out, err = raw_exec(serial, b"print('before')\n1/0")
    assert out == b"before\n"
    assert b"ZeroDivisionError" in err and b'File "<stdin>", line 2' in err
    assert b"vboard_agent" not in err


def test_state_is_kept_between_execs_and_lost_on_soft_reset(serial):
    raw_exec(serial, b"x = 5")
    assert raw_exec(serial, b"print(x)")[0] == b"5\n"
    serial.write(b"\x04")  # Ctrl-D with no code: soft reset
    serial.read_until(b"soft reboot\r\n")
    serial.read_until(b"raw REPL; CTRL-B to exit\r\n>")
    assert b"NameError" in raw_exec(serial, b"print(x)")[1]


def test_raw_paste_mode_with_flow_control(serial):
    code = b"s = 0\n" + b"s += 1\n" * 200 + b"print(s)\n"  # > one window
    serial.write(b"\x05A\x01")
    assert serial.read(2) == b"R\x01"
    window = struct.unpack("<H", serial.read(2))[0]
    assert window > 0
    sent, credit = 0, window
    while sent < len(code):
        if credit == 0:
            assert serial.read(1) == b"\x01"
            credit += window
        chunk = code[sent : sent + credit]
        serial.write(chunk)
        sent += len(chunk)
        credit -= len(chunk)
    serial.write(b"\x04")
    # any remaining window acknowledgements come before the end acknowledgement
    assert serial.read_until(b"\x04").strip(b"\x01") == b"\x04"
    assert serial.read_until(b"\x04") == b"200\n\x04"
    assert serial.read_until(b"\x04") == b"\x04"


def test_ctrl_c_interrupts_running_code(serial):
    serial.write(b"import time\nwhile True:\n    time.sleep_ms(10)\n\x04")
    assert serial.read(2) == b"OK"
    time.sleep(0.2)  # let the loop start; an interrupt is what is being tested
    serial.write(b"\x03")
    assert serial.read_until(b"\x04") == b"\x04"
    assert b"KeyboardInterrupt" in serial.read_until(b"\x04")


def test_files_land_in_the_board_folder_and_sys_path_is_the_esp32s(board, serial):
    out, err = raw_exec(
        serial,
        b"import os, sys\nos.mkdir('/lib')\nf = open('/lib/hello.py', 'w')\n"
        b"f.write('WHERE = __file__')\nf.close()\nimport hello\nprint(hello.WHERE, sys.path)",
    )
    assert err == b""
    assert out == b"/lib/hello.py ['', '.frozen', '/lib']\n"
    assert (board.root / "lib" / "hello.py").read_text() == "WHERE = __file__"


def test_machine_reset_restarts_and_runs_boot_and_main(board):
    (board.root / "boot.py").write_text("print('boot ran')\n")
    (board.root / "main.py").write_text("print('main ran')\n")
    result = mpremote(board, "reset")
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 10
    while board.resets < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert board.resets == 1
    assert mpremote(board, "exec", "print('alive')").stdout == "alive\n"


def test_frozen_module_shadows_a_copy_in_lib(tmp_path):
    """As on an ESP32: a frozen umqtt wins over /lib/umqtt (docs/esp32.md, "Firmware releases")."""
    deps = ROOT / "build" / "deps"
    if not (deps / "umqtt" / "simple.py").exists():
        pytest.skip("umqtt.simple not fetched: run `make setup`")
    stale = tmp_path / "board" / "lib" / "umqtt"
    stale.mkdir(parents=True)
    (stale / "__init__.py").write_text("")
    (stale / "simple.py").write_text("STALE = True\n")
    with VirtualBoard(tmp_path / "board", frozen=("umqtt.simple",), frozen_path=(deps,)) as vb:
        result = mpremote(vb, "exec", "import umqtt.simple as s; print(hasattr(s, 'STALE'), s.MQTTClient)")
    assert result.stdout.startswith("False <class 'MQTTClient'>"), result


def test_mpremote_file_commands(board):
    local = board.root.parent / "data.bin"
    local.write_bytes(bytes(range(256)) * 20)
    result = mpremote(board, "mkdir", ":d", "+", "cp", str(local), ":d/data.bin", "+", "ls", ":d")
    assert result.returncode == 0, result.stderr
    assert "data.bin" in result.stdout
    assert (board.root / "d" / "data.bin").read_bytes() == local.read_bytes()
    again = mpremote(board, "cp", str(local), ":d/data.bin")
    assert "Up to date: d/data.bin" in again.stdout
    back = board.root.parent / "back.bin"
    assert mpremote(board, "cp", ":d/data.bin", str(back)).returncode == 0
    assert back.read_bytes() == local.read_bytes()


def test_friendly_repl_line(board):
    port = Serial(board.port)
    try:
        port.read_until(b"MicroPython virtual board (tools/vboard.py) on the Unix port\r\n>>> ")
        port.write(b"\x03")
        port.read_until(b"KeyboardInterrupt\r\n>>> ")
        port.write(b"1 + 2\r")
        assert port.read_until(b">>> ").endswith(b"1 + 2\r\n3\r\n>>> ")
    finally:
        port.close()


def test_command_line_board_prints_its_port_and_stops_cleanly(tmp_path):
    """`make vboard` runs this; a tool then connects to the printed port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.vboard", "--root", str(tmp_path / "board")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline()
        assert first.startswith("vboard: serial port /dev/pts/"), first + proc.stderr.read()
        port = first.split()[3]
        result = subprocess.run(
            [MPREMOTE, "connect", port, "exec", "open('/made.txt', 'w').write('x')"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "board" / "made.txt").read_text() == "x"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    assert "Traceback" not in proc.stderr.read()


def test_output_no_one_reads_is_dropped_not_blocking(board):
    """A chattering main.py with no tool attached must not wedge the board (as a UART drops)."""
    (board.root / "main.py").write_text("print('x' * 200000)\n")
    result = mpremote(board, "reset")
    assert result.returncode == 0
    deadline = time.monotonic() + 15
    while board.dropped == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert board.dropped > 0
    assert mpremote(board, "exec", "print('still here')").stdout == "still here\n"


def test_ctrl_b_leaves_the_raw_repl(serial):
    serial.write(b"\x02")
    serial.read_until(b"MicroPython virtual board (tools/vboard.py) on the Unix port\r\n>>> ")
    serial.write(b"print('friendly')\r")
    assert serial.read_until(b">>> ").endswith(b"friendly\r\n>>> ")


def firmware_tree(root: Path) -> None:
    """The firmware as `make deploy` lays it out (sources instead of .mpy): main.py, /lib."""
    import shutil

    lib = root / "lib"
    shutil.copytree(ROOT / "lib" / "jobs", lib / "jobs", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(ROOT / "boards" / "unix" / "board.py", lib / "board.py")
    shutil.copyfile(ROOT / "boards" / "esp32" / "devkitc.py", lib / "devkitc.py")
    shutil.copyfile(ROOT / "firmware" / "main.py", root / "main.py")


def test_a_halted_firmware_waits_at_the_repl_where_mpremote_fixes_config_json(tmp_path):
    """A bad config.json halts the firmware: the board stays at its REPL (no boot loop), mpremote
    reaches it, and a fixed config.json boots further (here to the missing certificate)."""
    root = tmp_path / "board"
    firmware_tree(root)
    (root / "config.json").write_text('{"thing_name": "vb", "endpoint": "localhost", "port": "x"}')
    with VirtualBoard(root) as vb:
        deadline = time.monotonic() + 20
        while vb.halts < 1:
            assert time.monotonic() < deadline, f"no halt; failed={vb.failed!r} resets={vb.resets}"
            time.sleep(0.05)
        assert "main: config.json: config key 'port'" in vb.halt_message, vb.halt_message
        listed = mpremote(vb, "exec", "print(open('config.json').read())")
        assert listed.returncode == 0 and '"port": "x"' in listed.stdout, listed
        fixed = tmp_path / "config.json"
        fixed.write_text('{"thing_name": "vb", "endpoint": "localhost", "port": 8883}')
        assert mpremote(vb, "cp", str(fixed), ":config.json", "+", "reset").returncode == 0
        deadline = time.monotonic() + 20
        while vb.halts < 2:
            assert time.monotonic() < deadline, f"no second halt; resets={vb.resets}"
            time.sleep(0.05)
        assert "main: cannot read /certs/ca.cert.der (ca in config.json)" in vb.halt_message, vb.halt_message
        assert vb.resets == 1  # mpremote's reset only: a halt is not a reset
        assert mpremote(vb, "exec", "print('at the REPL')").stdout == "at the REPL\n"
        assert (root / "simboard").is_dir()  # the unix board's state lives in the board's own '/'


def test_the_command_line_board_says_when_main_py_halted(tmp_path):
    root = tmp_path / "board"
    firmware_tree(root)
    (root / "config.json").write_text("{not json")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.vboard", "--root", str(root)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert lines[2] == (
        "vboard: main.py halted; the board waits at its REPL: main: config.json: not valid JSON / "
        "main: halted; fix it at the REPL (e.g. mpremote), then reset the board\n"
    ), lines


def test_after_deploys_reset_the_virtual_board_runs_the_firmware_as_a_chip(tmp_path):
    """The deployed tree boots in the board's own process ('/' is the device root): it connects to
    the stand-in, moves the LED, and a system.reboot job is a hard reset of the board."""
    deps = ROOT / "build" / "deps"
    if not (deps / "umqtt" / "simple.py").exists():
        pytest.skip("umqtt.simple not fetched: run `make setup`")
    from tools import deploy, provision
    from tools.standin import StandIn

    with StandIn(tmp_path / "aws") as aws:
        identity = aws.thing("vb-chip", "rsa")
        inputs = provision.Inputs(
            thing="vb-chip",
            endpoint="localhost",
            cert=identity.cert_pem,
            key=identity.key_pem,
            ca=aws.ca.cert_pem,
            board="unix",
            port=aws.port,
        )
        provision.provision(inputs, tmp_path / "config")
        with VirtualBoard(tmp_path / "board", frozen=("umqtt.simple",), frozen_path=(deps,)) as vb:
            deploy.deploy(vb.port, tmp_path / "config", out=tmp_path / "stage")
            aws.create_job("led-on", {"operation": "gpio.write", "pin": "LED", "value": 1}, ["vb-chip"])
            assert aws.wait_terminal("led-on", "vb-chip", timeout=30)["status"] == "SUCCEEDED"
            resets = vb.resets
            aws.create_job("reboot", {"operation": "system.reboot"}, ["vb-chip"])
            done = aws.wait_terminal("reboot", "vb-chip", timeout=30)
            assert done["status"] == "SUCCEEDED", done
            assert vb.resets == resets + 1 and vb.halts == 0
    assert (tmp_path / "board" / "simboard" / "pins.log").read_text().split() == ["LED", "4", "0", "1"]
