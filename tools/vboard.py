"""A virtual board: mpremote's serial REPL protocol on a pseudo-terminal, over a folder.

    python -m tools.vboard --root state/vboard      # prints the pty path; Ctrl-C stops it
    make deploy PORT=/dev/pts/N ...                  # then really copies files into the folder

What mpremote 1.29 (transport_serial.py) sends, and what this board answers:

* Ctrl-C (0x03): interrupts running code (SIGINT -> KeyboardInterrupt in the MicroPython process;
  if the code ignores it for 2 s the process is restarted); at a prompt it clears the line.
* Ctrl-A (0x01): raw REPL, answered "raw REPL; CTRL-B to exit\\r\\n>". Ctrl-B (0x02): friendly REPL.
* Raw REPL, code then Ctrl-D: "OK", the output, 0x04, the traceback, 0x04, then ">".
  Ctrl-D with no code: soft reset ("MPY: soft reboot\\r\\n", a new process, boot.py), then the
  raw REPL banner again.
* Raw-paste mode (0x05 'A' 0x01): supported. Answer "R\\x01" and a 16-bit window size; 0x01
  each time a window has been consumed; 0x04 at the end is acknowledged with 0x04, then the
  output is framed as in raw REPL.
* Friendly REPL: one line at a time (no continuation lines), expression values printed.
  Ctrl-D at an empty line: soft reset, boot.py and main.py, as on a board.
* `machine.reset()`: the process ends; the board restarts it and runs boot.py and main.py.
* A halt (the unix board's `halt()`, SystemExit(78): config.json bad, a certificate missing):
  main.py ends and the board waits at its REPL, as a chip does; the halt's last lines are in
  `halt_message` (the command line prints them).

The code runs in a MicroPython Unix-port process (tools/vboard_agent.py) whose '/' is the
board folder (vfs.VfsPosix) and whose sys.path is the ESP32's ['', '.frozen', '/lib']; the unix
board's state folder (the device root) is that '/'.
"""

import argparse
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import tty
from collections import deque
from pathlib import Path

from tools.mpenv import as_typed, micropython_binary, venv_tool

ROOT = Path(__file__).resolve().parent.parent
AGENT = Path(__file__).resolve().parent / "vboard_agent.py"
MARKER = b"\x00\x1bVB\x00"
HALTED = b"\x00\x1bVH\x00"  # tools/vboard_agent.py: the code it ran halted the board
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
WINDOW = 256
INTERRUPT_GRACE_S = 2.0
WRITE_TIMEOUT_S = 0.5


class VirtualBoard:
    """A board whose filesystem is `root`, reachable on the pty `self.port` once started.

    `frozen`: module names imported before the filesystem is mounted (like frozen modules),
    found on `frozen_path` (MICROPYPATH entries). `romfs`: the size of a ROMFS partition
    (0: none, as in stock ESP32 firmware), kept in `romfs_file` beside the board folder.
    """

    def __init__(
        self, root: Path, frozen: tuple[str, ...] = (), frozen_path: tuple[Path, ...] = (), romfs: int = 0
    ):
        self.root = Path(root).resolve()
        self.frozen = frozen
        self.frozen_path = frozen_path
        self.romfs = romfs
        self.romfs_file = self.root.parent / (self.root.name + ".romfs")
        self.port = ""
        self._master: int | None = None
        self._slave: int | None = None
        self.resets = 0
        self.halts = 0
        self.halt_message = ""  # the last lines printed before the last halt
        self._tail = b""
        self.failed = ""
        self.dropped = 0  # bytes of output no one read (the pty buffer was full)
        self._unheard = False
        self._ready = False
        self._proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._raw = False
        self._busy = False
        self._actions: deque = deque()
        self._pending = bytearray()
        self._line = bytearray()
        self._code = bytearray()
        self._paste: int | None = None  # bytes received since the last window, in raw-paste mode
        self._escape = b""  # 0x05 'A' 0x01 being received
        self._out = bytearray()
        self._interrupted_at: float | None = None

    # ---- life cycle ----

    def start(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self._power_on(run_main=True)
        self._actions.insert(len(self._actions) - 1, self._banner)
        self._thread = threading.Thread(target=self._loop, name="vboard", daemon=True)
        self._thread.start()
        return self.port

    def stop(self):
        """Power off (again is fine): the process ends and the pty closes."""
        self._stop.set()
        if self._thread:
            self._thread.join(5)
            self._thread = None
        self._kill()
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # ---- the MicroPython process ----

    def _spawn(self):
        env = dict(
            os.environ, MICROPYPATH=":".join([".frozen", *map(str, self.frozen_path)]), JOBS_BOARD_STATE="/"
        )
        if self.romfs:
            env["VBOARD_ROMFS"] = f"{self.romfs}:{self.romfs_file}"
        self._proc = subprocess.Popen(
            [micropython_binary(), str(AGENT), str(self.root), *self.frozen],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.root,
            start_new_session=True,  # a Ctrl-C in the terminal stops the board, not the chip
        )
        self._out.clear()
        self._ready = False
        self._busy = True  # until the agent's first MARKER: ready
        self._interrupted_at = None

    def _kill(self):
        if self._proc and self._proc.poll() is None:
            self._proc.kill()
        if self._proc:
            self._proc.wait()
            for stream in (self._proc.stdin, self._proc.stdout):
                stream.close()
        self._proc = None

    def _power_on(self, run_main: bool):
        """A fresh process (soft or hard reset), boot.py, main.py in friendly mode, then a prompt."""
        self._kill()
        self._actions.clear()
        self._code.clear()
        self._line.clear()
        self._paste = None
        self._spawn()
        self._actions.append(lambda: self._command(b"f", b"/boot.py"))
        if run_main:
            self._actions.append(lambda: self._command(b"f", b"/main.py"))
        self._actions.append(self._prompt)

    def _command(self, kind: bytes, payload: bytes):
        self._busy = True
        try:
            self._proc.stdin.write(kind + b" %d\n" % len(payload) + payload)
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass  # the process has ended: the end of its output restarts it

    def _prompt(self):
        self._write(b">" if self._raw else b">>> ")

    def _banner(self):
        self._write(b"MicroPython virtual board (tools/vboard.py) on the Unix port\r\n")

    # ---- the serial side ----

    def _write(self, data: bytes):
        """Send to the serial side; like a UART with no one listening, drop what cannot go out."""
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._master, view)
            except BlockingIOError:
                # after one timeout, drop at once until the serial side speaks again
                wait = 0 if self._unheard else WRITE_TIMEOUT_S
                _, writable, _ = select.select([], [self._master], [], wait)
                if not writable:
                    self.dropped += len(view)
                    self._unheard = True
                    return
                continue
            view = view[n:]

    def _loop(self):
        try:
            self._serve()
        except Exception as error:  # noqa: BLE001 - reported through .failed, which main() prints
            self.failed = f"the board stopped: {error!r}"

    def _serve(self):
        while not self._stop.is_set():
            self._advance()
            readers = [self._master]
            if self._proc:
                readers.append(self._proc.stdout)
            ready, _, _ = select.select(readers, [], [], 0.1)
            if self._proc and self._proc.stdout in ready:
                chunk = os.read(self._proc.stdout.fileno(), 65536)
                if chunk:
                    self._from_agent(chunk)
                else:
                    self._agent_ended()
            if self._master in ready:
                try:
                    data = os.read(self._master, 65536)
                except OSError:  # no one has the port open
                    data = b""
                if data:
                    self._unheard = False
                for byte in data:
                    if byte == 3 and self._busy:
                        if self._ready:  # a Ctrl-C while the process starts is dropped
                            self._interrupt()
                    else:
                        self._pending.append(byte)
            if self._interrupted_at and time.monotonic() - self._interrupted_at > INTERRUPT_GRACE_S:
                self._power_on(run_main=False)

    def _advance(self):
        """Run queued actions, then feed pending serial input, while the process is idle."""
        while not self._busy and (self._actions or self._pending):
            if self._actions:
                self._actions.popleft()()
                continue
            byte = self._pending.pop(0)
            if self._raw:
                self._raw_byte(byte)
            else:
                self._friendly_byte(byte)

    def _interrupt(self):
        if self._proc and self._interrupted_at is None:
            self._proc.send_signal(signal.SIGINT)
            self._interrupted_at = time.monotonic()

    def _from_agent(self, chunk: bytes):
        self._out += chunk
        while True:
            at = self._out.find(MARKER)
            halt = self._out.find(HALTED)
            if halt >= 0 and (at < 0 or halt < at):
                self._forward(bytes(self._out[:halt]))
                del self._out[: halt + len(HALTED)]
                self._halted()
                continue
            if at < 0:
                keep = len(MARKER) - 1
                self._forward(bytes(self._out[:-keep]))
                del self._out[:-keep]
                return
            self._forward(bytes(self._out[:at]))
            del self._out[: at + len(MARKER)]
            self._busy = False
            self._ready = True
            self._interrupted_at = None

    def _forward(self, data: bytes):
        if data:
            self._tail = (self._tail + data)[-1024:]
            self._write(data if self._raw else data.replace(b"\n", b"\r\n"))

    def _halted(self):
        lines = [line.strip() for line in self._tail.decode(errors="replace").splitlines() if line.strip()]
        self.halt_message = " / ".join(lines[-2:])
        self.halts += 1

    def _agent_ended(self):
        """The process exited (machine.reset(), sys.exit, a crash): a hard reset."""
        self._forward(bytes(self._out))
        if not self._ready:
            said = self._tail.decode(errors="replace").strip().splitlines()
            self.failed = f"the MicroPython process ({micropython_binary()}) ended before it was ready" + (
                f": {said[-1]}" if said else ""
            )
            self._write(b"\r\nvboard: " + self.failed.encode() + b"\r\n")
            self._kill()
            return
        self.resets += 1
        self._raw = False
        self._write(b"\r\nvboard: reset\r\n")
        self._power_on(run_main=True)
        self._actions.appendleft(self._banner)

    def _soft_reset(self):
        self._write(b"MPY: soft reboot\r\n")
        self._power_on(run_main=not self._raw)
        if self._raw:
            self._actions.insert(len(self._actions) - 1, lambda: self._write(RAW_BANNER))
        else:
            self._actions.insert(len(self._actions) - 1, self._banner)

    def _raw_byte(self, byte: int):
        if self._paste is not None:
            if byte == 4:
                self._paste = None
                self._write(b"\x04")
                self._run_raw()
                return
            self._code.append(byte)
            self._paste += 1
            if self._paste == WINDOW:
                self._paste = 0
                self._write(b"\x01")
            return
        if self._escape:
            self._escape += bytes([byte])
            if len(self._escape) == 3:
                if self._escape == b"\x05A\x01":
                    self._paste = 0
                    self._write(b"R\x01" + struct.pack("<H", WINDOW))
                else:
                    self._write(b"R\x00")
                self._escape = b""
            return
        if byte == 1:
            self._code.clear()
            self._write(b"\r\n" + RAW_BANNER + b">")
        elif byte == 2:
            self._raw = False
            self._code.clear()
            self._write(b"\r\n")
            self._banner()
            self._prompt()
        elif byte == 3:
            self._code.clear()
        elif byte == 4:
            if self._code:
                self._write(b"OK")
                self._run_raw()
            else:
                self._soft_reset()
        elif byte == 5 and not self._code:
            self._escape = b"\x05"
        else:
            self._code.append(byte)

    def _run_raw(self):
        code = bytes(self._code)
        self._code.clear()
        self._command(b"r", code)
        self._actions.append(self._prompt)

    def _friendly_byte(self, byte: int):
        if byte == 1:
            self._raw = True
            self._line.clear()
            self._write(b"\r\n" + RAW_BANNER + b">")
        elif byte == 3:
            self._line.clear()
            self._write(b"\r\nKeyboardInterrupt\r\n>>> ")
        elif byte == 4:
            if not self._line:
                self._write(b"\r\n")
                self._soft_reset()
        elif byte == 13:
            self._write(b"\r\n")
            line = bytes(self._line).strip()
            self._line.clear()
            if line:
                self._command(b"s", line)
            self._actions.append(self._prompt)
        elif byte in (8, 127):
            if self._line:
                self._line.pop()
                self._write(b"\x08 \x08")
        elif byte >= 32:
            self._line.append(byte)
            self._write(bytes([byte]))


def unusable(root: Path) -> str | None:
    """Why the board cannot start with filesystem `root` (a sentence), or None."""
    if root.exists() and not root.is_dir():
        return f"cannot use {root} as the board's filesystem: it is not a folder"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"cannot use {root} as the board's filesystem: {error.strerror}"
    binary = micropython_binary()
    if not shutil.which(binary):
        return f"the MicroPython Unix port {binary} was not found: run `make setup` (or set MICROPYTHON)"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.vboard",
        description="A virtual MicroPython board on a pseudo-terminal, for mpremote, without hardware.",
    )
    parser.add_argument("--root", type=Path, default=ROOT / "state" / "vboard", help="the board's filesystem")
    parser.add_argument(
        "--frozen",
        action="append",
        default=[],
        help="module to 'freeze' (imported before the filesystem is mounted), e.g. umqtt.simple",
    )
    parser.add_argument(
        "--frozen-path",
        action="append",
        type=Path,
        default=[],
        help="where frozen modules are found (default build/deps)",
    )
    parser.add_argument(
        "--romfs",
        type=int,
        default=0,
        help="bytes of a ROMFS partition (default none), for `make deploy ROMFS=1`",
    )
    args = parser.parse_args(argv)
    problem = unusable(args.root)
    if problem:
        print(f"vboard: {problem}", file=sys.stderr)
        return 2
    frozen_path = tuple(args.frozen_path or [ROOT / "build" / "deps"])
    board = VirtualBoard(args.root, tuple(args.frozen), frozen_path, args.romfs)
    port = board.start()
    mpremote = as_typed(venv_tool("mpremote") or "mpremote")
    print(f"vboard: serial port {port}  (filesystem {board.root})", flush=True)
    print(f"vboard: try  {mpremote} connect {port} ls :   Ctrl-C here stops the board", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        heard = 0
        while not board.failed:
            if board.halts > heard:
                heard = board.halts
                print(
                    f"vboard: main.py halted; the board waits at its REPL: {board.halt_message}", flush=True
                )
            time.sleep(0.5)
        print(f"vboard: {board.failed}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        board.stop()


if __name__ == "__main__":
    sys.exit(main())
