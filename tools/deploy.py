"""`make deploy PORT=...`: put the firmware, library, board and config on a board with mpremote.

    python -m tools.deploy --port /dev/ttyUSB0 --config state/provision/<thing> [--board esp32]
                           [--handlers path/to/handlers.py]

1. Check what needs no board: the provisioned files, the board folder, and that the user's
   handlers.py (if given) compiles with mpy-cross (its error in one line, naming the line).
2. Ask the board (mpremote exec), before building anything: its MicroPython version (v1.23 or
   later is needed: ssl/tls layout, umqtt >= 1.4 frozen), whether a stale /lib/umqtt exists
   (on ESP32 sys.path is ['', '.frozen', '/lib'], so the frozen umqtt.simple shadows it and it
   only misleads) and which .py files are in /lib. A port that does not exist or does not
   answer is named here.
3. Stage the device tree in build/deploy/<board>/ (printed as a table; the folder is mode 0700,
   config.json and the key 0600, and `make clean` removes it):
       /boot.py, /main.py                 firmware entry points, as source
       /handlers.py                        the user's operations, as source (--handlers)
       /lib/jobs/...mpy                    the library, compiled with mpy-cross
       /lib/<module>.mpy                   boards/<board>/*.py, compiled
       /config.json, /certs/*.der          from tools/provision.py
   umqtt is never staged: the ESP32 firmware's frozen umqtt.simple (>= 1.4) is the one used.
   An old firmware, a stale /lib/umqtt or a .py in /lib that would shadow a deployed .mpy:
   refuse, with the command that fixes it (or --remove-stale to remove the stale files).
4. `mpremote cp` every file (it skips a file whose sha256 already matches), then read back the
   sha256 of every deployed file and compare, then `mpremote reset`.

With --romfs (`make deploy ROMFS=1`) the library and board modules go into a ROMFS image
instead of /lib (`mpremote romfs build`), written with `mpremote romfs deploy` when
`mpremote romfs query` shows the board has a ROMFS partition it fits in; the firmware mounts it
at /rom and imports from /rom/lib (before /lib) with the bytecode in place (docs/tooling.md).
"""

import argparse
import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tools import boardfiles, build, provision
from tools.mpenv import as_typed, venv_tool

ROOT = Path(__file__).resolve().parent.parent
MIN_VERSION = (1, 23, 0)
CONFIG_FILES = ("config.json", provision.CA_FILE, provision.CERT_FILE, provision.KEY_FILE)
SECRET_FILES = ("config.json", provision.KEY_FILE)
HANDLERS = "/handlers.py"  # the device root: main.py imports `handlers` from there at boot
OPTIONAL_CONFIG_FILES = (provision.CODESIGN_FILE,)  # deployed when make provision wrote them

PROBE = """\
import sys, os
def _walk(d, out):
    try:
        entries = list(os.ilistdir(d))
    except OSError:
        return
    for e in entries:
        p = d + '/' + e[0]
        if e[1] == 0x4000:
            _walk(p, out)
        elif p.endswith('.py'):
            out.append(p)
def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False
_py = []
_walk('/lib', _py)
print('DEPLOY-PROBE', repr([tuple(sys.implementation.version[:3]), _exists('/lib/umqtt'), _py, sys.platform]))
"""

HASHES = """\
import hashlib, binascii
for _p in {paths!r}:
    _h = hashlib.sha256()
    try:
        with open(_p, 'rb') as _f:
            while True:
                _b = _f.read(512)
                if not _b:
                    break
                _h.update(_b)
        print('DEPLOY-HASH', _p, binascii.hexlify(_h.digest()).decode())
    except OSError:
        print('DEPLOY-HASH', _p, 'missing')
"""


# mpy-cross -march for a board, needed only when a module has @micropython.native/viper code
BOARD_ARCH = {
    "esp32": "xtensawin",
    "esp32s2": "xtensawin",
    "esp32s3": "xtensawin",
    "esp32c3": "rv32imc",
    "esp32c6": "rv32imc",
    "unix": "x64",
}


def uses_native_code(root: Path = ROOT) -> bool:
    """True if any device module has @micropython.native/viper code (then -march matters)."""
    return any(
        "@micropython.native" in text or "@micropython.viper" in text
        for text in (p.read_text() for p in build.device_sources(root))
    )


class DeployError(Exception):
    """Something the user must fix; args[0] is the sentence (or list of sentences)."""


@dataclass
class Device:
    version: tuple
    stale_umqtt: bool
    lib_py: list[str] = field(default_factory=list)
    platform: str = ""


def mpremote() -> str:
    found = venv_tool("mpremote")
    if not found:
        raise DeployError("mpremote not found: run `make setup`")
    return found


def check_handlers(handlers: Path) -> list[str]:
    """Problems with the user's handlers.py: missing, or mpy-cross does not compile it."""
    if not handlers.is_file():
        return [f"handlers file {handlers} does not exist (HANDLERS=path/to/handlers.py)"]
    error = build.compile_error(handlers)
    if error:
        return [f"{handlers} does not compile, {error} (mpy-cross; nothing was copied)"]
    return []


def check_inputs(config_dir: Path, board: str, root: Path = ROOT, handlers: Path | None = None) -> None:
    """What can be checked without the board; DeployError lists every problem."""
    problems = []
    board_dir = root / "boards" / board
    if not board_dir.is_dir():
        boards = sorted(p.name for p in (root / "boards").iterdir() if p.is_dir())
        problems.append(f"board {board!r} does not exist: boards/ has {', '.join(boards)}")
    for name in CONFIG_FILES:
        if not (config_dir / name).is_file():
            problems.append(f"{config_dir / name} is missing: run `make provision` first (docs/tooling.md)")
    if not (root / "firmware" / "boot.py").is_file():
        problems.append("firmware/boot.py is missing")
    if handlers is not None:
        problems += check_handlers(handlers)
    if problems:
        raise DeployError(problems)


def check_port(port: str) -> None:
    """A serial device path that does not exist is named before anything is built."""
    if port.startswith("/") and not os.path.exists(port):
        raise DeployError(
            f"serial port {port} does not exist: is the board plugged in? "
            f"(`{as_typed(mpremote())} devs` lists the ports)"
        )


def stage(
    config_dir: Path,
    board: str,
    out: Path,
    root: Path = ROOT,
    frozen_library: bool = False,
    handlers: Path | None = None,
) -> dict[str, Path]:
    """Build the device tree under `out`; return {device path: local file}.

    frozen_library: the firmware has the library and board modules frozen in (manifest.py), so
    only entry points and config are staged (a /lib copy would be shadowed by `.frozen`).
    handlers: the user's handlers.py, staged as /handlers.py (source, at the device root).
    The staging folder holds the key and the Wi-Fi password: it is 0700, those files 0600.
    """
    check_inputs(config_dir, board, root, handlers)

    march = None
    if uses_native_code(root):
        march = BOARD_ARCH.get(board)
        if march is None:
            raise DeployError(f"native code needs an -march for board {board!r}; known: {sorted(BOARD_ARCH)}")
    if out.exists():
        shutil.rmtree(out)
    provision.private_folder(out)
    compiled = out.parent / (out.name + "-mpy")
    if compiled.exists():
        shutil.rmtree(compiled)
    library = sorted(p for p in (root / "lib").rglob("*.py") if "__pycache__" not in p.parts)
    board_files = boardfiles.board_modules(root / "boards", board)
    build.build(compiled, march, root=root, sources=[] if frozen_library else library + board_files)
    tree: dict[str, Path] = {}

    def put(device_path: str, source: Path):
        target = out / device_path.lstrip("/")
        provision.write_file(target, source.read_bytes(), secret=device_path.lstrip("/") in SECRET_FILES)
        tree[device_path] = target

    for name in ("boot.py", "main.py"):
        if (root / "firmware" / name).is_file():
            put("/" + name, root / "firmware" / name)
    if handlers is not None:
        put(HANDLERS, handlers)
    for mpy in sorted((compiled / "lib").rglob("*.mpy")) if not frozen_library else ():
        put("/" + mpy.relative_to(compiled).as_posix(), mpy)
    for source in board_files if not frozen_library else ():
        put("/lib/" + source.stem + ".mpy", (compiled / source.relative_to(root)).with_suffix(".mpy"))
    for name in CONFIG_FILES:
        put("/" + name, config_dir / name)
    for name in OPTIONAL_CONFIG_FILES:
        if (config_dir / name).is_file():
            put("/" + name, config_dir / name)
    shutil.rmtree(compiled, ignore_errors=True)

    wrong = [p for p in tree if "umqtt" in p.split("/")]
    if wrong:
        raise DeployError(f"refusing to deploy {', '.join(wrong)}: the firmware uses the frozen umqtt")
    return tree


def staging_folder(board: str, root: Path = ROOT) -> Path:
    """Where deploy stages a board's tree by default (`make clean` removes build/deploy)."""
    return root / "build" / "deploy" / board


def parse_probe(output: str) -> Device:
    for line in output.splitlines():
        if line.startswith("DEPLOY-PROBE "):
            version, stale, lib_py, platform = ast.literal_eval(line[len("DEPLOY-PROBE ") :])
            return Device(tuple(version), stale, list(lib_py), platform)
    raise DeployError(f"the board did not answer the probe; it said:\n{output.strip()}")


def device_problems(device: Device, tree: dict[str, Path], port: str) -> tuple[list[str], list[str]]:
    """(problems, stale paths on the device that --remove-stale would delete)."""
    problems, stale = [], []
    tool = as_typed(mpremote())
    if device.version < MIN_VERSION:
        have = ".".join(map(str, device.version))
        problems.append(
            f"the board runs MicroPython v{have}; v1.23 or later is needed (TLS via the ssl/tls "
            "modules, frozen umqtt.simple >= 1.4): flash a current firmware, `make flash` (docs/tooling.md)"
        )
    if device.stale_umqtt:
        stale.append("/lib/umqtt")
        problems.append(
            "the board has /lib/umqtt, which the frozen umqtt.simple shadows on ESP32 "
            "(sys.path is ['', '.frozen', '/lib']): it is never used and only misleads; remove it with "
            f"`{tool} connect {port} rm -r :/lib/umqtt` or deploy with --remove-stale"
        )
    shadowing = [p for p in device.lib_py if p[:-3] + ".mpy" in tree]
    if shadowing:
        stale += shadowing
        targets = " ".join(":" + p for p in shadowing)
        problems.append(
            f"the board has {', '.join(shadowing)}, which MicroPython imports before the .mpy "
            f"being deployed: remove with `{tool} connect {port} rm {targets}` "
            "or deploy with --remove-stale"
        )
    return problems, stale


def run_mpremote(port: str, args: list[str], echo: bool) -> str:
    """Run mpremote on `port`; echo its output live (progress) if asked; return the output."""
    command = [mpremote(), "connect", port, *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if echo and not line.startswith(("DEPLOY-HASH", "DEPLOY-PROBE")):
            print("  " + line.rstrip())
    proc.wait()
    output = "".join(lines)
    if proc.returncode:
        raise DeployError(f"mpremote {args[0]} on {port} failed:\n{output.strip()}")
    return output


MKDIRS = """\
import os
for _d in {folders!r}:
    try:
        os.mkdir(_d)
    except OSError:
        pass
"""


def copy_commands(tree: dict[str, Path]) -> list[str]:
    """mpremote commands (joined with '+'): make the folders, then one `cp` per file.

    One `cp` per file makes mpremote print a line per file as it goes (the progress), and
    "Up to date: <path>" for a file whose sha256 already matches (not copied).
    """
    folders = sorted({p.rsplit("/", i)[0] for p in tree for i in range(1, p.count("/"))} - {""})
    args = ["exec", MKDIRS.format(folders=sorted(folders, key=len))]
    for device_path, local in sorted(tree.items()):
        args += ["+", "cp", str(local), ":" + device_path]
    return args


def verify(port: str, tree: dict[str, Path]) -> list[str]:
    """Device paths whose sha256 on the board differs from the staged file."""
    output = run_mpremote(port, ["exec", HASHES.format(paths=sorted(tree))], echo=False)
    seen = {}
    for line in output.splitlines():
        if line.startswith("DEPLOY-HASH "):
            _, path, digest = line.split(" ", 2)
            seen[path] = digest.strip()
    return [
        path
        for path, local in sorted(tree.items())
        if seen.get(path) != hashlib.sha256(local.read_bytes()).hexdigest()
    ]


# ---- ROMFS: the library as an image the firmware runs in place --------------------------

ROMFS_HASH = """\
import vfs, hashlib, binascii
_h = hashlib.sha256(memoryview(vfs.rom_ioctl(2, 0))[:{size}])
print('DEPLOY-ROMFS', binascii.hexlify(_h.digest()).decode())
"""


@dataclass
class Romfs:
    """What `mpremote romfs query` said about partition 0."""

    size: int | None  # bytes, None when there is no partition
    image: int | None = None  # bytes of the valid image on it, if any
    why: str = ""  # mpremote's words when there is no partition


def parse_romfs_query(output: str) -> Romfs:
    """Partition 0 as `mpremote romfs query` reports it (mpremote 1.24+ wording)."""
    size = image = None
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("ROMFS0 partition has size "):
            size = int(line.split()[4])
        elif line.startswith("ROMFS image size:") and size is not None and image is None:
            image = int(line.split(":", 1)[1])
    if size is None:
        # "ROMFS is not enabled on this device", "No ROMFS partitions available"
        return Romfs(None, why=lines[-1] if lines else "no answer")
    return Romfs(size, image)


def romfs_split(tree: dict[str, Path]) -> tuple[dict[str, Path], dict[str, Path]]:
    """(the staged /lib files, which go into the image, everything else)."""
    image = {p: f for p, f in tree.items() if p.startswith("/lib/")}
    return image, {p: f for p, f in tree.items() if p not in image}


def build_romfs(files: dict[str, Path], out: Path) -> Path:
    """`mpremote romfs build` of `files` (device paths /lib/...) into `out`.romfs; the image."""
    folder = out.parent / (out.name + "-romfs")
    if folder.exists():
        shutil.rmtree(folder)
    for device_path, local in files.items():
        target = folder / device_path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, target)
    image = out.parent / (out.name + ".romfs")
    result = subprocess.run(
        [mpremote(), "romfs", "-o", str(image), "build", str(folder)], capture_output=True, text=True
    )
    shutil.rmtree(folder, ignore_errors=True)
    if result.returncode or not image.is_file():
        raise DeployError(f"mpremote romfs build failed:\n{(result.stdout + result.stderr).strip()}")
    return image


def deploy_romfs(port: str, tree: dict[str, Path], out: Path) -> dict[str, Path]:
    """Write the library as a ROMFS image when the board has room for it; the files left to copy."""
    files, rest = romfs_split(tree)
    part = parse_romfs_query(run_mpremote(port, ["romfs", "query"], echo=False))
    if part.size is None:
        raise DeployError(
            f"the board has no ROMFS partition (mpremote romfs query: {part.why}): flash a firmware "
            "with one (MicroPython v1.25+ and a partition table with a `romfs` partition), "
            "or deploy without ROMFS=1 (the library then goes to /lib as .mpy)"
        )
    image = build_romfs(files, out)
    size = image.stat().st_size
    print(
        f"deploy: ROMFS image {image} ({size} bytes, {len(files)} modules) for a {part.size}-byte partition"
    )
    if size > part.size:
        raise DeployError(
            f"the ROMFS image ({size} bytes) does not fit the board's ROMFS partition ({part.size} bytes)"
        )
    run_mpremote(port, ["romfs", "deploy", str(image)], echo=True)
    output = run_mpremote(port, ["exec", ROMFS_HASH.format(size=size)], echo=False)
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    if f"DEPLOY-ROMFS {digest}" not in output:
        raise DeployError(
            f"after `mpremote romfs deploy` the partition's sha256 differs from the image's:\n{output}"
        )
    print("deploy: ROMFS image written, its sha256 read back; the library runs from /rom/lib after the reset")
    return rest


def deploy(
    port: str,
    config_dir: Path,
    board: str | None = None,
    out: Path | None = None,
    reset: bool = True,
    remove_stale: bool = False,
    root: Path = ROOT,
    frozen_library: bool = False,
    handlers: Path | None = None,
    romfs: bool = False,
) -> dict:
    """Deploy; return {'copied': [...], 'unchanged': [...], 'tree': {...}}. DeployError on a problem.

    Nothing is built before the board has answered; nothing is copied if anything is wrong.
    romfs: the library and board modules as a ROMFS image (deploy_romfs); 'tree' is then what
    was copied besides it."""
    if romfs and frozen_library:
        raise DeployError(
            "--romfs and --frozen-library exclude each other: the library is either frozen or in ROMFS"
        )
    config_path = config_dir / "config.json"
    if board is None:
        try:
            board = json.loads(config_path.read_text()).get("board") or "esp32"
        except (OSError, ValueError) as error:
            raise DeployError(
                f"{config_path}: cannot read it ({error}): run `make provision` first"
            ) from None
        if not isinstance(board, str):
            raise DeployError(f"{config_path}: 'board' is not a board name: pass --board (BOARD=...)")
    out = out or staging_folder(board, root)
    check_inputs(config_dir, board, root, handlers)
    check_port(port)
    device = parse_probe(run_mpremote(port, ["exec", PROBE], echo=False))
    print(f"deploy: the board runs MicroPython v{'.'.join(map(str, device.version))} ({device.platform})")

    tree = stage(config_dir, board, out, root, frozen_library, handlers)
    print(f"deploy: {len(tree)} files staged in {out}")
    for path in sorted(tree):
        print(f"  {path}  ({tree[path].stat().st_size} bytes)")
    problems, stale = device_problems(device, tree, port)
    if problems and remove_stale and stale and device.version >= MIN_VERSION:
        args = []
        for path in stale:
            args += (["+"] if args else []) + ["rm", "-r", ":" + path]
        run_mpremote(port, args, echo=True)
        print(f"deploy: removed {', '.join(stale)}")
        problems = []
    if problems:
        raise DeployError(problems)
    if romfs:
        tree = deploy_romfs(port, tree, out)

    output = run_mpremote(port, copy_commands(tree), echo=True)
    unchanged = sorted(
        line.split(":", 1)[1].strip() for line in output.splitlines() if line.startswith("Up to date:")
    )
    copied = sorted(set(tree) - set(unchanged))
    wrong = verify(port, tree)
    if wrong:
        raise DeployError(f"after copying, the board's sha256 differs for: {', '.join(wrong)}")
    print(f"deploy: {len(copied)} copied, {len(unchanged)} unchanged, all {len(tree)} verified by sha256")
    if reset:
        run_mpremote(port, ["reset"], echo=False)
        print("deploy: board reset")
    return {"copied": copied, "unchanged": unchanged, "tree": tree}


def package_json(root: Path = ROOT) -> dict:
    """What `mpremote mip install github:<owner>/<repo>` reads: every lib/jobs module (as source).

    URLs are relative to package.json, so a local `mip install path/to/package.json` works too.
    """
    sources = sorted((root / "lib").rglob("*.py"))
    return {
        "urls": [
            [p.relative_to(root / "lib").as_posix(), p.relative_to(root).as_posix()]
            for p in sources
            if p.relative_to(root / "lib").parts[0] == "jobs" and "__pycache__" not in p.parts
        ],
        "deps": [],
        "version": "0.1.0",
    }


def package_json_text(root: Path = ROOT) -> str:
    return json.dumps(package_json(root), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.deploy", description="Copy firmware, library, board and config to a board."
    )
    parser.add_argument("--port", help="serial port, e.g. /dev/ttyUSB0 (or a vboard pty)")
    parser.add_argument("--config", type=Path, help="folder written by tools.provision")
    parser.add_argument("--board", help="folder under boards/ (default: the config's board)")
    parser.add_argument(
        "--handlers", type=Path, help="your handlers.py: checked with mpy-cross, deployed to the device root"
    )
    parser.add_argument("--no-reset", action="store_true", help="do not reset the board afterwards")
    parser.add_argument(
        "--frozen-library",
        action="store_true",
        help="the firmware was built with manifest.py: copy only entry points and config",
    )
    parser.add_argument(
        "--romfs",
        action="store_true",
        help="the library as a ROMFS image (mpremote romfs deploy) instead of .mpy files in /lib",
    )
    parser.add_argument(
        "--remove-stale", action="store_true", help="remove /lib/umqtt and .py files shadowing the .mpy"
    )
    parser.add_argument(
        "--write-package-json", action="store_true", help="regenerate package.json (for mip) and exit"
    )
    args = parser.parse_args(argv)
    if args.write_package_json:
        (ROOT / "package.json").write_text(package_json_text())
        print(f"deploy: wrote {ROOT / 'package.json'}")
        return 0
    if not args.port or not args.config:
        parser.error("--port and --config are needed (make deploy PORT=... CONFIG=...)")
    try:
        deploy(
            args.port,
            args.config,
            args.board,
            reset=not args.no_reset,
            remove_stale=args.remove_stale,
            frozen_library=args.frozen_library,
            handlers=args.handlers,
            romfs=args.romfs,
        )
    except DeployError as error:
        problems = error.args[0] if isinstance(error.args[0], list) else [error.args[0]]
        for problem in problems:
            print(f"deploy: {problem}", file=sys.stderr)
        return 2
    except SystemExit as stop:  # build failures from tools.build carry their message
        print(f"deploy: {stop}", file=sys.stderr)
        return 2
    except OSError as error:
        print(
            f"deploy: cannot write {error.filename or 'the staging folder'}: {error.strerror}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("deploy: interrupted; run it again to finish (unchanged files are skipped)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
