"""Memory as the chip counts it: the firmware's GC heap on the 32-bit MicroPython and with the
library's bytecode in place (ROMFS), measured by bench/mp_chip.py.

* 32-bit: the WebAssembly MicroPython (tools/wasm), ESP32-sized objects; the library, the unix
  board and the test helpers as `.mpy` files, umqtt.simple imported before the baseline (frozen
  into the ESP32 firmware).
* bytecode in place: an image made by `mpremote romfs build` (library, board, umqtt) mounted with
  `vfs.VfsRom` on the Unix port, the only runtime here with VfsRom, which is 64-bit; the image's
  own bytes are in the baseline. Beside it the same boot with `.mpy` files, also 64-bit, so the
  difference is what running in place saves.
"""

import ast
import json
import os
import shutil
import subprocess
from pathlib import Path

from bench.common import ROOT, BenchError, micropython_binary
from tools import mpenv

SCRIPT = ROOT / "bench" / "mp_chip.py"
THING = "bench-chip"


def device_folder(folder: Path) -> Path:
    """A device filesystem: main.py, config.json (defaults) and RSA DER files, as AWS issues them."""
    from tools import certs
    from tools.simdevice import provision

    pki = folder / "pki"
    ca = certs.make_ca(pki, "ca")
    device = certs.make_device(ca, pki, THING, "rsa")
    root = folder / "device"
    provision(
        root,
        {"thing_name": THING, "endpoint": "bench.invalid", "board_state_dir": str(root)},
        ca.cert_der,
        device.cert_der,
        device.key_der,
    )
    shutil.copy(ROOT / "firmware" / "main.py", root / "main.py")
    return root


def chip_path(mpy_env: dict) -> dict:
    """Where the .mpy build of tests/conftest.py's `mpy` resource put the board, library, deps."""
    lib = Path(mpy_env["MPTEST_MPY_LIB"])
    out = lib.parent
    boards = out / "boards"
    # the unix board imports the DevKitC pin table from boards/esp32, deployed beside it
    return {"lib": lib, "board": boards / "unix", "devkitc": boards / "esp32", "deps": out / "deps",
            "helpers": out / "helpers"}  # fmt: skip


def romfs_image(folder: Path, paths: dict) -> Path:
    """`mpremote romfs build` of lib/ holding the library, board.mpy and umqtt, as deployed."""
    tree = folder / "romfs" / "lib"
    shutil.copytree(paths["lib"], tree)
    shutil.copy(paths["board"] / "board.mpy", tree / "board.mpy")
    shutil.copy(paths["devkitc"] / "devkitc.mpy", tree / "devkitc.mpy")
    shutil.copytree(paths["deps"] / "umqtt", tree / "umqtt")
    image = folder / "lib.romfs"
    build_romfs(tree.parent, image)
    return image


def build_romfs(tree: Path, image: Path) -> None:
    mpremote = Path(os.environ.get("MPREMOTE") or Path(micropython_binary()).parent / "mpremote")
    proc = subprocess.run(
        [str(mpremote), "romfs", "-o", str(image), "build", str(tree)], capture_output=True, text=True
    )
    if proc.returncode or not image.exists():
        raise BenchError(f"mpremote romfs build failed: {(proc.stdout + proc.stderr)[-600:]}")


def _parse(stdout: str) -> dict:
    values = {}
    for line in stdout.splitlines():
        if line.startswith("@@bench "):
            parts = line.split()[1:]
            values[" ".join(parts[:-1])] = parts[-1]
    return values


def run(runtime: str, args, env: dict, timeout: float) -> dict:
    """bench/mp_chip.py on `runtime` ("wasm32" or "unix"); its `@@bench` values."""
    if runtime == "wasm32":
        command = mpenv.wasm_command()
        if command is None:
            raise BenchError("the wasm32 MicroPython (Node.js + build/wasm) is missing: run `make setup`")
    else:
        command = [micropython_binary()]
    full_env = dict(os.environ, MICROPYPATH=mpenv.micropypath(), **env)
    try:
        proc = subprocess.run(
            [*command, str(SCRIPT), *map(str, args)],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"mp_chip.py {args[0]} on {runtime}: no result within {timeout:.0f}s") from None
    values = _parse(proc.stdout)
    if proc.returncode or values.get("completed") != "1":
        tail = (proc.stdout + proc.stderr)[-1500:]
        raise BenchError(f"mp_chip.py {args[0]} on {runtime} failed (status {proc.returncode}):\n{tail}")
    return values


def _env(root: Path, *folders) -> dict:
    return {"MPTEST_CHIP_ROOT": str(root), "MPTEST_CHIP_PATH": ":".join(str(f) for f in folders)}


def lib_modules(lib: Path = ROOT / "lib") -> dict:
    """{module: [the lib modules it imports at its top level]} for every module of lib/."""
    graph = {}
    for source in sorted(lib.rglob("*.py")):
        parts = list(source.relative_to(lib).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        deps = set()
        if len(parts) > 1:
            deps.add(".".join(parts[:-1]))  # a package is imported before its modules
        for node in ast.parse(source.read_text()).body:
            if isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                deps.add(node.module)
                deps.update(node.module + "." + alias.name for alias in node.names)
        graph[name] = deps
    return {name: sorted(d for d in deps if d in graph and d != name) for name, deps in graph.items()}


def import_order(names, graph: dict) -> list:
    """`names` with every module after the lib modules it imports (so each cost is its own)."""
    order, seen = [], set()

    def visit(name):
        if name in seen:
            return
        seen.add(name)
        for dep in graph.get(name, ()):
            visit(dep)
        order.append(name)

    for name in sorted(names):
        visit(name)
    return order


def measure(folder: Path, mpy_env: dict, jobs: int = 1000) -> dict:
    """Every figure: {"wasm": {...}, "imports": {module: bytes}, "unix_mpy": {...}, "unix_rom": {...}}."""
    paths = chip_path(mpy_env)
    mpy = (paths["board"], paths["devkitc"], paths["lib"], paths["deps"], paths["helpers"])
    wasm_env = _env(device_folder(folder / "wasm"), *mpy)
    out = {"wasm": run("wasm32", ["boot", jobs], wasm_env, timeout=120 + jobs * 0.2)}
    graph = lib_modules()
    graph = {**graph, "devkitc": ["jobs.ops.pins"], "board": ["devkitc", "jobs.clock", "jobs.store"]}
    modules = import_order(["board", *graph], graph)
    costs = run("wasm32", ["imports", *modules], wasm_env, timeout=120)
    out["imports"] = {name: int(costs["import " + name]) for name in modules}
    # 64-bit, the Unix port: the same boot with .mpy files and with the bytecode in place
    out["unix_mpy"] = run("unix", ["boot", 0], _env(device_folder(folder / "unix-mpy"), *mpy), timeout=120)
    image = romfs_image(folder, paths)
    rom_env = _env(device_folder(folder / "unix-rom"), "/rom/lib", paths["helpers"])
    out["unix_rom"] = run("unix", ["boot", 0, image], rom_env, timeout=120)
    return out


if __name__ == "__main__":  # python -m bench.chip: the figures as JSON, for a look without make bench
    import tempfile

    from bench.micro import MpyModules

    with tempfile.TemporaryDirectory(prefix="bench-chip-") as tmp, MpyModules() as mods:
        print(json.dumps(measure(Path(tmp), mods.env, int(os.environ.get("CHIP_JOBS", "1000"))), indent=2))
