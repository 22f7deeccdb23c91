# MicroPython program: the "chip" of tools/vboard.py. Runs inside the Unix port, never on CPython.
"""Execute code sent by tools/vboard.py with a board folder mounted as the filesystem root.

Usage: micropython vboard_agent.py <board folder> [frozen module ...]

Before mounting, each named module is imported from MICROPYPATH and stays in sys.modules, as a
frozen module does on the ESP32 (so a copy in /lib cannot shadow it). Then the folder becomes
'/', sys.path becomes the ESP32's ['', '.frozen', '/lib'], and `machine.reset()` ends the
process with status 99 (the host restarts it: a hard reset); `os.rename` is mended (see _Os).
SystemExit(78), the unix board's halt(), ends only the code that raised it (the board stays at
its REPL, as a chip whose main.py returned) and is announced to the host with HALTED before
MARKER.

VBOARD_ROMFS=<size>:<file> gives the board a ROMFS partition of <size> bytes kept in <file>
(outside the board folder), as an ESP32 firmware built with ROMFS has: `vfs.rom_ioctl` for
`mpremote romfs query|deploy`, and at boot a valid image is mounted at /rom with '/rom' and
'/rom/lib' on sys.path before '/lib'.

Commands on stdin: "<kind> <length>\n" then <length> bytes.
    r  raw-REPL exec:   output, 0x04, traceback, 0x04
    s  friendly line:   output (expression values printed), traceback
    f  run a file:      the payload is its path; silently skipped if it does not exist
After each command, and once when ready, the agent writes MARKER.
"""

import io
import sys

import umachine
import vfs

MARKER = b"\x00\x1bVB\x00"
HALTED = b"\x00\x1bVH\x00"
RESET_STATUS = 99
HALT_STATUS = 78  # boards/unix: halt()


def _halted(stop):
    return bool(stop.args) and stop.args[0] == HALT_STATUS


class _Machine:
    """The built-in machine module plus reset() (the Unix port has none)."""

    def reset(self):
        raise SystemExit(RESET_STATUS)

    def soft_reset(self):
        raise SystemExit(RESET_STATUS)

    def reset_cause(self):
        return 1


def _install_machine():
    fake = _Machine()
    for name in dir(umachine):
        if not name.startswith("_"):
            setattr(fake, name, getattr(umachine, name))
    sys.modules["machine"] = fake


class _Os:
    """The built-in os with a rename() that works on the board folder: this port's VfsPosix with
    a root joins both paths of rename() in one buffer, so rename(a, b) renames b to b (ENOENT).
    The rename goes through a root-less VfsPosix mounted for the moment at _HOST."""

    _HOST = "/.vboard-host"

    def __init__(self, os, root):
        for name in dir(os):
            if not name.startswith("_") and name != "rename":
                setattr(self, name, getattr(os, name))
        self._os = os
        self._root = root.rstrip("/")

    def _host(self, path):
        if not path.startswith("/"):
            path = self._os.getcwd().rstrip("/") + "/" + path
        return self._HOST + self._root + path

    def rename(self, old, new):
        vfs.mount(vfs.VfsPosix(), self._HOST)
        try:
            self._os.rename(self._host(old), self._host(new))
        finally:
            vfs.umount(self._HOST)


class _RomVfs:
    """The built-in vfs module plus rom_ioctl over one partition held in a host file."""

    def __init__(self, size, path):
        for name in dir(vfs):
            if not name.startswith("_"):
                setattr(self, name, getattr(vfs, name))
        self.segment = bytearray(b"\xff" * size)  # erased flash
        try:
            self._file = open(path, "r+b")  # opened before the board folder becomes '/'
            self._file.readinto(self.segment)
        except OSError:
            self._file = open(path, "w+b")

    def _save(self):
        self._file.seek(0)
        self._file.write(self.segment)
        self._file.flush()

    def rom_ioctl(self, op, *args):
        # the operations of extmod/vfs_rom_ioctl.h that mpremote uses
        if op == 1:  # number of segments
            return 1
        if args and args[0] != 0:
            return -22
        if op == 2:  # the segment: a buffer, so mpremote writes it with ioctls 3-5
            return self.segment
        if op == 3:  # prepare to write (id, length) or (id, offset, length): erase
            offset, length = (0, args[1]) if len(args) == 2 else (args[1], args[2])
            self.segment[offset : offset + length] = b"\xff" * length
            return 4  # the smallest write
        if op == 4:  # write (id, offset, data)
            self.segment[args[1] : args[1] + len(args[2])] = args[2]
            return 0
        if op == 5:  # writing complete
            self._save()
            return 0
        if op == 6:  # block size
            return 4096
        return -22


def _rom_partition():
    import os

    setting = os.getenv("VBOARD_ROMFS")
    if not setting:
        return None
    size, path = setting.split(":", 1)
    return _RomVfs(int(size), path)


def _install_romfs(rom):
    sys.modules["vfs"] = rom
    try:
        vfs.mount(vfs.VfsRom(rom.segment), "/rom")
    except OSError:  # erased, or not a ROMFS image: the firmware boots without /rom
        return []
    return ["/rom", "/rom/lib"]


def _exec(source, mode, scope):
    out = sys.stdout
    try:
        exec(compile(source.decode(), "<stdin>", mode), scope)
    except SystemExit as stop:
        if not _halted(stop):
            raise stop
        sys.stdout.buffer.write(HALTED)
    except BaseException as error:  # noqa: BLE001 - whatever the code raised is reported, as on a board
        if mode == "exec":
            out.write("\x04")
        out.write(_traceback(error))
        if mode == "exec":
            out.write("\x04")
        return
    if mode == "exec":
        out.write("\x04\x04")


def _traceback(error):
    """The traceback as a board prints it: without this agent's own frames."""
    text = io.StringIO()
    sys.print_exception(error, text)
    lines = text.getvalue().split("\n")
    return "\n".join(line for line in lines if "vboard_agent" not in line)


def _run_file(path, scope):
    try:
        with open(path) as f:
            source = f.read()
    except OSError:
        return
    try:
        exec(compile(source, path, "exec"), scope)
    except SystemExit as stop:
        if not _halted(stop):
            raise stop
        sys.stdout.buffer.write(HALTED)
    except BaseException as error:  # noqa: BLE001 - a failing boot.py/main.py prints, as on a board
        sys.print_exception(error)


def main():
    root = sys.argv[1]
    for name in sys.argv[2:]:
        __import__(name)
    _install_machine()
    rom = _rom_partition()  # before the board folder becomes '/': its file is outside
    vfs.mount(vfs.VfsPosix(root), "/")
    import os

    os = sys.modules["os"] = _Os(os, root)
    os.chdir("/")
    sys.path[:] = ["", ".frozen"] + (_install_romfs(rom) if rom else []) + ["/lib"]
    scope = {"__name__": "__main__"}
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(MARKER)
    while True:
        try:
            header = stdin.readline()
        except KeyboardInterrupt:
            continue
        if not header:
            return 0
        kind, length = header.split()
        payload = stdin.read(int(length))
        try:
            if kind == b"r":
                _exec(payload, "exec", scope)
            elif kind == b"s":
                _exec(payload, "single", scope)
            elif kind == b"f":
                _run_file(payload.decode(), scope)
        except SystemExit as stop:
            return stop.args[0] if stop.args else 0
        stdout.write(MARKER)


sys.exit(main())
