"""The simulated ESP32: firmware/main.py under the MicroPython Unix port with the unix board.

Like a chip, it boots again after a reset: the unix board turns `reset()` into exit status 75,
and the runner starts the process again. A halt (exit 78: config.json bad, a certificate
missing) and an uncaught exception in main.py (exit 1) stop it, as a chip then waits at its
REPL; a crash (killed by a signal, any other status) reboots, as a panic would, after a short
pause. The device's filesystem is one folder (`root`): config.json, certs/, the journal, the
board's state and the application files.

The firmware runs in a process group of its own, so Ctrl-C in the terminal reaches only this
runner, which then stops the firmware quietly; the firmware dies with the runner.

Two ways to boot it:
* from the repository (default): firmware/main.py with lib/, boards/unix and build/deps on
  MICROPYPATH;
* `deployed=True`: the tree `make deploy` copied into `root` (a virtual board's folder):
  `root/main.py`, with MICROPYPATH `.frozen`, build/deps (umqtt.simple, standing in for the
  ESP32 firmware's frozen one, so it comes before /lib as `.frozen` does there) and
  `root/lib` (the deployed .mpy files and board module). Nothing from the repository's lib/
  or boards/ can be imported.
"""

import argparse
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tools.mpenv import micropypath, micropython_binary

ROOT = Path(__file__).resolve().parent.parent
EXIT_RESET = 75
EXIT_HALT = (
    78  # the unix board's halt(): config.json bad, a certificate missing; booting again would not help
)
EXIT_UNCAUGHT = 1  # main.py raised: a chip would sit at its REPL
EXIT_INTERRUPTED = 130  # main.py ended by KeyboardInterrupt: at the REPL too
STOPPED = (EXIT_HALT, EXIT_UNCAUGHT, EXIT_INTERRUPTED)
_CRASH_PAUSE_S = 0.5
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """A preexec_fn: the firmware gets SIGKILL when its runner (the thread that started it) ends."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the process group alone
        return None
    return lambda: prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def preflight(heapsize: str | None) -> str:
    """Why MicroPython will not start with these arguments, in one sentence ("" when it does)."""
    command = [micropython_binary()] + (["-X", f"heapsize={heapsize}"] if heapsize else [])
    try:
        result = subprocess.run([*command, "-c", "pass"], capture_output=True, text=True, timeout=30)
    except OSError as error:
        return f"cannot run MicroPython ({command[0]}): {error.strerror}; run `make setup` or set MICROPYTHON"
    if result.returncode == 0:
        return ""
    said = (result.stderr or result.stdout).strip().splitlines()
    given = f" with --heapsize {heapsize}" if heapsize else ""
    return f"MicroPython refused to start{given}: {said[0] if said else f'exit {result.returncode}'}"


def app_image(size: int, version: str, seed: int = 7) -> bytes:
    """An ESP32 app image as far as the firmware reads one: the image magic 0xE9 first (what the
    unix board's set_boot() checks) and an esp_app_desc_t at byte 32 (its magic word, the
    version at byte 48), the rest filler."""
    data = bytearray((i * 31 + seed + (i >> 12)) & 0xFF for i in range(size))
    data[0] = 0xE9
    data[32:36] = (0xABCD5432).to_bytes(4, "little")
    data[48:80] = version.encode().ljust(32, b"\0")
    return bytes(data)


def deployed_micropypath(root: Path) -> str:
    """The path of a deployed tree: frozen stand-ins first (as on an ESP32), then root/lib."""
    parts = [ROOT / "build" / "deps", Path(root).resolve() / "lib"]
    return ":".join([".frozen"] + [str(p) for p in parts])


def provision(root: Path, config: dict, ca_der: Path, cert_der: Path, key_der: Path) -> Path:
    """Write the device's config.json and DER files into its filesystem folder."""
    certs = root / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca_der, certs / "ca.cert.der")
    shutil.copyfile(cert_der, certs / "device.cert.der")
    shutil.copyfile(key_der, certs / "device.key.der")
    settings = {
        "ca": "certs/ca.cert.der",
        "cert": "certs/device.cert.der",
        "key": "certs/device.key.der",
        "board": "unix",
        **config,
    }
    path = root / "config.json"
    path.write_text(json.dumps(settings, indent=2))
    return path


class SimDevice:
    """Runs and re-boots the simulated device; `kill()` is a power cut, `start()` power on."""

    def __init__(self, root: Path, heapsize: str | None = None, echo: bool = False, deployed: bool = False):
        self.root = Path(root).resolve()  # the process runs with cwd = root: no relative paths
        self.heapsize = heapsize
        self.echo = echo
        self.deployed = deployed
        self.boots = 0
        self.exits: list[int] = []
        self.process: subprocess.Popen | None = None
        self._running = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def log(self) -> Path:
        return self.root / "device.log"

    def command(self) -> list[str]:
        command = [micropython_binary()]
        if self.heapsize:
            command += ["-X", f"heapsize={self.heapsize}"]
        main = self.root.resolve() / "main.py" if self.deployed else ROOT / "firmware" / "main.py"
        return command + [str(main)]

    def env(self) -> dict:
        # the device's root folder comes first, as '' (the cwd, "/") does on the ESP32
        path = deployed_micropypath(self.root) if self.deployed else micropypath(self.root)
        return dict(os.environ, MICROPYPATH=path, JOBS_BOARD_STATE=str(self.root))

    def start(self) -> "SimDevice":
        """Power on: boot now, and again after every reset, until kill() or stop()."""
        self._running = True
        self._thread = threading.Thread(target=self._supervise, daemon=True)
        self._thread.start()
        return self

    def _supervise(self) -> None:
        with open(self.log, "ab") as log:
            while self._running:
                with self._lock:
                    if not self._running:
                        break
                    self.boots += 1
                    log.write(f"--- boot {self.boots} ---\n".encode())
                    log.flush()
                    self.process = subprocess.Popen(
                        self.command(),
                        cwd=self.root,
                        env=self.env(),
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        process_group=0,
                        preexec_fn=_die_with_parent(),
                    )
                for line in self.process.stdout:
                    log.write(line)
                    log.flush()
                    if self.echo:
                        sys.stdout.write(line.decode(errors="replace"))
                        sys.stdout.flush()
                status = self.process.wait()
                self.exits.append(status)
                log.write(f"--- exit {status} ---\n".encode())
                log.flush()
                if status in STOPPED:
                    self._running = False  # as a chip at its REPL: booting again would not help
                elif status != EXIT_RESET and self._running:
                    time.sleep(_CRASH_PAUSE_S)

    def kill(self) -> None:
        """Power cut: SIGKILL the running firmware and do not boot again."""
        self._halt(signal.SIGKILL)

    def stop(self) -> None:
        """Switch off politely (SIGTERM), for the end of a run."""
        self._halt(signal.SIGTERM)

    def _halt(self, sig) -> None:
        with self._lock:
            self._running = False
            if self.process and self.process.poll() is None:
                self.process.send_signal(sig)
        if self._thread:
            self._thread.join(10)
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    @property
    def halted(self) -> bool:
        """The firmware stopped for good (halt or main.py ended), not by stop() or kill()."""
        return bool(self.exits) and self.exits[-1] in STOPPED and not self._running

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, text: str, timeout: float = 20.0, after: int = 0) -> bool:
        """True once `text` appears in the device log (past offset `after`) within `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output()[after:]:
                return True
            time.sleep(0.05)
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run the simulated ESP32 (firmware/main.py on the unix board)."
    )
    parser.add_argument(
        "root", type=Path, help="the device's filesystem folder (with config.json and certs/)"
    )
    parser.add_argument("--heapsize", help="MicroPython heap, e.g. 64K (default: the port's)")
    parser.add_argument(
        "--deployed",
        action="store_true",
        help="boot the tree `make deploy` put in ROOT (ROOT/main.py, ROOT/lib), not the repository's",
    )
    args = parser.parse_args(argv)
    if not (args.root / "config.json").exists():
        print(f"simdevice: {args.root}/config.json not found: provision the device first", file=sys.stderr)
        return 2
    if args.deployed and not (args.root / "main.py").exists():
        print(f"simdevice: {args.root}/main.py not found: deploy to it first (make deploy)", file=sys.stderr)
        return 2
    problem = preflight(args.heapsize)
    if problem:
        print(f"simdevice: {problem}", file=sys.stderr)
        return 2
    device = SimDevice(args.root, args.heapsize, echo=True, deployed=args.deployed).start()
    try:
        while device._thread.is_alive():
            device._thread.join(0.5)
    except KeyboardInterrupt:
        device.stop()
        return 0
    status = device.exits[-1] if device.exits else 1
    if status == EXIT_HALT:
        print(
            f"simdevice: halted (exit {status}): fix what it names in {args.root}, then start again",
            file=sys.stderr,
        )
    else:
        print(f"simdevice: main.py ended (exit {status}); a chip would now wait at its REPL", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
