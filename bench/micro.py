"""Measurements inside MicroPython: heap (bench/mp_heap.py), scanner (bench/mp_scan.py), .mpy size."""

import os
import subprocess
from pathlib import Path

from bench.common import ROOT, BenchError, micropython_binary


class MpyModules:
    """The .mpy builds tests/conftest.py's `mpy` resource makes (lib/, umqtt, test helpers)."""

    def __enter__(self):
        from tests.conftest import _Resources

        self.resources = _Resources()
        self.env = self.resources.env(["mpy"])
        return self

    def __exit__(self, *exc):
        self.resources.stop()


def run_mp(script: str, args, mpy_env: dict, heapsize: str | None = None, timeout: float = 300) -> tuple:
    """Run a bench/mp_*.py script; ({key: value} from `@@bench` lines, returncode, output tail)."""
    from tests.conftest import micropypath

    command = [micropython_binary()]
    if heapsize:
        command += ["-X", f"heapsize={heapsize}"]
    command += [str(ROOT / "bench" / script), *map(str, args)]
    env = dict(os.environ, MICROPYPATH=micropypath(), **mpy_env)
    try:
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{script} {' '.join(map(str, args))}: no result within {timeout:.0f}s") from None
    values = {}
    for line in proc.stdout.splitlines():
        if line.startswith("@@bench "):
            parts = line.split()[1:]
            values[" ".join(parts[:-1])] = parts[-1]
    return values, proc.returncode, (proc.stdout + proc.stderr)[-1200:]


def cycles_pass(mpy_env, heap_k: int, cycles: int) -> dict | None:
    values, code, _ = run_mp(
        "mp_heap.py", ["cycles", cycles], mpy_env, f"{heap_k}K", timeout=60 + cycles * 0.05
    )
    return values if code == 0 and values.get("completed") == str(cycles) else None


def smallest_heap(mpy_env, cycles: int, search_cycles: int, lo_k=32, hi_k=256, step_k=4) -> tuple:
    """Smallest -X heapsize (KiB, `step_k` grid) at which `cycles` job cycles complete.

    Bisects with `search_cycles` (a failure from lack of heap shows within the first cycles), then
    confirms with the full count, stepping up if needed. Returns (KiB, values of the passing run).
    """
    if cycles_pass(mpy_env, hi_k, search_cycles) is None:
        _, _, tail = run_mp("mp_heap.py", ["cycles", search_cycles], mpy_env, f"{hi_k}K")
        raise BenchError(f"heap: {search_cycles} cycles fail even with {hi_k}K:\n{tail}")
    lo, hi = lo_k // step_k, hi_k // step_k  # lo fails (assumed), hi passes
    if cycles_pass(mpy_env, lo_k, search_cycles) is not None:
        hi = lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if cycles_pass(mpy_env, mid * step_k, search_cycles) is not None:
            hi = mid
        else:
            lo = mid
    for _ in range(4):
        values = cycles_pass(mpy_env, hi * step_k, cycles)
        if values is not None:
            return hi * step_k, values
        hi += 1
    raise BenchError(f"heap: {cycles} cycles did not complete up to {hi * step_k}K")


def scanner(mpy_env, sizes=(1024, 8192, 32768)) -> dict:
    values, code, tail = run_mp("mp_scan.py", list(sizes), mpy_env, timeout=120)
    if code:
        raise BenchError(f"scanner benchmark failed:\n{tail}")
    return values


def import_and_stream(mpy_env, size: int = 128 * 1024) -> dict:
    out = {}
    for args in (["import"], ["stream", size]):
        values, code, tail = run_mp("mp_heap.py", args, mpy_env, timeout=120)
        if code:
            raise BenchError(f"mp_heap.py {args[0]} failed:\n{tail}")
        out.update(values)
    return out


def mpy_sizes(folder: Path) -> dict:
    """{module path: .mpy bytes} of lib/ compiled by tools.build."""
    from tools.build import ROOT as SRC
    from tools.build import build

    written = build(folder, sources=sorted((SRC / "lib").rglob("*.py")))
    return {str(p.relative_to(folder / "lib")): p.stat().st_size for p in written}
