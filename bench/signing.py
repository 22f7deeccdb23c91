"""The code-signing check (ECDSA P-256, jobs/ecdsa.py): time and heap per verification.

    python -m bench.signing [--count 20]

Runs bench/mp_signing.py on the MicroPython Unix port (64-bit) and, when `node` and the 32-bit
WebAssembly runtime (tools/wasm/run.mjs, installed by make setup under build/wasm) are present,
on that too; both load lib/ as .mpy, as a device does. The signatures are made now by OpenSSL
over random keys and messages (tests/ecdsa_vectors.py). On the Unix port it also bisects the
smallest -X heapsize with and without one verification: the difference is the heap a
verification needs (the WebAssembly port grows its heap instead of failing, so not there).
`measure()` returns {runtime: {key: value}} for bench.run; a runtime that cannot run says why
under "skipped".
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import ROOT, BenchError
from bench.micro import MpyModules

WASM_RUNNER = ROOT / "tools" / "wasm" / "run.mjs"
PACKAGE = ("@micropython", "micropython-webassembly-pyscript", "micropython.mjs")
FIGURES = (
    ("verify_cpu_ms", "ms of CPU per verification"),
    ("verify_ms_median", "ms per verification, wall clock (median round)"),
    ("verify_ms_min", "ms per verification, wall clock (best round)"),
    ("alloc_bytes", "bytes allocated per verification, gc disabled"),
    ("live_peak_bytes", "most heap held at once above the start (sampled)"),
    ("retained_bytes", "heap still held afterwards"),
    ("heap_needed_bytes", "smallest -X heapsize: with one verification - without"),
)
ONE_CHECK = """\
import binascii
from jobs import ecdsa
key = ecdsa.public_key(binascii.unhexlify({key!r}))
digest = binascii.unhexlify({digest!r})
der = binascii.unhexlify({der!r})
if {verify}:
    assert ecdsa.verify(digest, der, key)
print("CHECKED")
"""


def _wasm_missing() -> str | None:
    if not WASM_RUNNER.exists():
        return f"{WASM_RUNNER.relative_to(ROOT)} is not there"
    if shutil.which("node") is None:
        return "node is not installed"
    module = os.environ.get("WASM_MICROPYTHON") or str(
        ROOT / "build" / "wasm" / "node_modules" / Path(*PACKAGE)
    )
    if not Path(module).exists():
        return f"{module} is missing (make setup installs it)"
    return None


def _run(runtime: str, args: list, env: dict) -> tuple[dict, float]:
    """Run bench/mp_signing.py on `runtime`; ({key: value} of its @@bench lines, CPU seconds)."""
    from bench.common import micropython_binary
    from tests.conftest import micropypath

    runner = [micropython_binary()] if runtime == "unix" else ["node", str(WASM_RUNNER)]
    command = [*runner, str(ROOT / "bench" / "mp_signing.py"), *map(str, args)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        proc = subprocess.run(
            command,
            env=dict(os.environ, MICROPYPATH=micropypath(), **env),
            capture_output=True,
            text=True,
            timeout=600,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"signing on {runtime}: no result within 600 s") from None
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    values = {}
    for line in proc.stdout.splitlines():
        if line.startswith("@@bench "):
            parts = line.split()[1:]
            values[" ".join(parts[:-1])] = parts[-1]
    if proc.returncode or values.get("completed") != "1":
        raise BenchError(f"signing on {runtime} failed:\n{(proc.stdout + proc.stderr)[-1200:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return values, cpu


def _runtime(runtime: str, env: dict, count: int, rounds: int) -> dict:
    values, _ = _run(runtime, [count, rounds], env)
    # CPU time, less disturbed by a busy machine than the wall clock: rounds minus no rounds
    _, idle = _run(runtime, [count, 0, "time"], env)
    _, busy = _run(runtime, [count, rounds, "time"], env)
    values["verify_cpu_ms"] = f"{(busy - idle) * 1000 / (count * rounds):.2f}"
    return values


def _smallest_heap(module: str, path: str, lo: int = 1024, hi: int = 262144, step: int = 64) -> int:
    from bench.common import micropython_binary

    def passes(size: int) -> bool:
        proc = subprocess.run(
            [micropython_binary(), "-X", f"heapsize={size}", "-c", f"import {module}"],
            env=dict(os.environ, MICROPYPATH=path),
            capture_output=True,
            text=True,
            timeout=60,
        )
        return "CHECKED" in proc.stdout

    if not passes(hi):
        raise BenchError(f"signing: {module} fails even with a {hi} B heap")
    while hi - lo > step:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if passes(mid) else (mid, hi)
    return hi


def heap_needed(vectors: Path, mpy_lib: str) -> int:
    """Bytes of heap one verification needs above a script that only loads key and signature."""
    from tools.build import mpy_cross

    name, digest, der, key, verdict = next(
        c for c in json.loads(vectors.read_text())["cases"] if c[0].startswith("random-")
    )
    folder = vectors.parent / "heap"
    folder.mkdir(exist_ok=True)
    for verify in (0, 1):
        source = folder / f"check{verify}.py"
        source.write_text(ONE_CHECK.format(key=key, digest=digest, der=der, verify=verify))
        subprocess.run([mpy_cross(), "-o", str(source.with_suffix(".mpy")), str(source)], check=True)
        source.unlink()  # the .mpy is what is imported: no compiler on the heap
    path = f"{mpy_lib}:{folder}"
    return _smallest_heap("check1", path) - _smallest_heap("check0", path)


def measure(count: int = 20, rounds: int = 5) -> dict:
    from tests import ecdsa_vectors

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-signing-") as folder, MpyModules() as mods:
        ecdsa_vectors.write(Path(folder), good=count)
        env = {"MPTEST_ECDSA": folder, "MPTEST_MPY_LIB": mods.env["MPTEST_MPY_LIB"]}
        results["unix"] = _runtime("unix", env, count, rounds)
        results["unix"]["heap_needed_bytes"] = str(
            heap_needed(Path(folder) / "vectors.json", env["MPTEST_MPY_LIB"])
        )
        missing = _wasm_missing()
        if missing:
            results["skipped"] = {"wasm": missing}
        else:
            results["wasm"] = _runtime("wasm", env, count, rounds)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20, help="signatures (default 20)")
    parser.add_argument("--rounds", type=int, default=5, help="times each is verified (default 5)")
    args = parser.parse_args(argv)
    try:
        results = measure(args.count, args.rounds)
    except BenchError as error:
        print(f"bench.signing: {error}", file=sys.stderr)
        return 1
    for runtime in ("unix", "wasm"):
        values = results.get(runtime)
        if values is None:
            print(f"{runtime}: not measured: {results['skipped'][runtime]}")
            continue
        label = "Unix port (64-bit)" if runtime == "unix" else "WebAssembly (32-bit)"
        print(f"{label}, {values['verifications']} verifications:")
        for key, name in FIGURES:
            if key in values:
                print(f"  {name:52} {values[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
