"""OTA memory: the smallest -X heapsize that completes an ota.firmware download of 1 MiB and
of 1.5 MiB, and the peak live heap during each, are the same: RAM does not grow with the image.

Device modules run as .mpy (as deployed); figures are printed (pytest -s shows them)."""

import json
import os
import shutil
import subprocess
import time

import pytest

from tests.conftest import ROOT
from tests.host.fileserver import FileServer
from tests.host.test_ops_resets import image, ota_config, ota_doc
from tools import build
from tools.mpenv import micropython_binary

MIB = 1024 * 1024
RESET = 75


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    folder = tmp_path_factory.mktemp("otaheap")
    mpy = folder / "mpy"
    build.build(mpy)
    tests = mpy / "tests"
    tests.mkdir()
    for name in ("jobdouble", "otadrive"):
        source = ROOT / "tests" / "device" / f"{name}.py"
        subprocess.run([build.mpy_cross(), "-o", str(tests / f"{name}.mpy"), str(source)], check=True)
    server = FileServer(folder / "server").start()
    path = [
        ".frozen",
        tests,
        mpy / "lib",
        mpy / "boards" / "unix",
        mpy / "boards" / "esp32",
        ROOT / "build" / "deps",
    ]
    yield folder, server, ":".join(str(p) for p in path)
    server.stop()


_SHA: dict = {}
_ELAPSED: dict = {}


def ota_run(rig, size: int, heapsize: int):
    """(completed, peak live heap) of one ota.firmware run under -X heapsize."""
    folder, server, path = rig
    name = f"heap-{size}.bin"
    if name not in _SHA:
        _SHA[name] = image(server, name, size)
    sha = _SHA[name]
    state = folder / "state"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir()
    (folder / "doc.json").write_text(json.dumps(ota_doc(server, name, sha, size)))
    (folder / "config.json").write_text(json.dumps(ota_config(server)))
    env = dict(os.environ, MICROPYPATH=path, DRIVE_HEAP="1")
    command = [micropython_binary(), "-X", f"heapsize={heapsize}", "-m", "otadrive"]
    command += [str(state), str(folder / "doc.json"), str(folder / "config.json")]
    started = time.monotonic()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    _ELAPSED[size] = time.monotonic() - started
    otadata = state / "simboard" / "otadata.json"
    done = proc.returncode == RESET and json.loads(otadata.read_text())["boot"] == "ota_1"
    peaks = [int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("@@heap")]
    return done, max(peaks, default=0)


def smallest_heap(rig, size: int, lo: int = 16 * 1024, hi: int = 256 * 1024, step: int = 512) -> int:
    assert ota_run(rig, size, hi)[0], "the OTA does not complete even with a large heap"
    while hi - lo > step:
        mid = (lo + hi) // 2
        if ota_run(rig, size, mid)[0]:
            hi = mid
        else:
            lo = mid
    return hi


def test_smallest_heap_and_peak_do_not_grow_with_the_image(rig):
    small = smallest_heap(rig, 1 * MIB)
    large = smallest_heap(rig, 3 * MIB // 2)
    _, peak_small = ota_run(rig, 1 * MIB, 2 * MIB)
    _, peak_large = ota_run(rig, 3 * MIB // 2, 2 * MIB)
    print(f"\nsmallest heapsize: 1 MiB image {small} B, 1.5 MiB image {large} B")
    print(f"peak live heap:    1 MiB image {peak_small} B, 1.5 MiB image {peak_large} B")
    seconds = _ELAPSED[3 * MIB // 2]
    print(f"1.5 MiB OTA process (start, TLS, download, read-back verify): {seconds:.2f} s")
    assert abs(large - small) <= 512
    assert peak_small > 0 and abs(peak_large - peak_small) <= 256
    assert not ota_run(rig, 3 * MIB // 2, small - 4096)[0]  # the figure is a real limit
