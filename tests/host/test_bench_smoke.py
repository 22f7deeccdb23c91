"""The benchmark harness end to end in its tiny configuration (`--quick`), not the timed benchmark.

It runs every section (stand-in, our device on the Unix port, the SDK v2 peer, heap bisection,
the firmware's heap on the 32-bit runtime and in place, scanner, .mpy size, the load test) with a
handful of jobs, and checks that each produced a
figure and that the CSV, JSON and PNG are written.
"""

import csv
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

EXPECTED = {
    "floor": ["rtt_ms", "service_ms", "minimal_ms", "floor_ms"],
    "device": ["ours_ms", "ours_jobs_s", "ours_rss_mib", "idle_rss_mib", "overhead"],
    "peer": ["peer_ms", "peer_jobs_s", "peer_rss_mib", "jobs_ratio", "rss_ratio"],
    "heap": ["heap_min_kib", "heap_drift_b", "stream_alloc_b", "import_kib"],
    "chip": ["chip_boot_kib", "chip_boot_rom64_kib", "chip_steady_drift_b", "chip_peak_above_boot_kib"],
    "scanner": ["scan_mbs_1024", "loads_mbs_1024", "scan_alloc_1024", "loads_alloc_1024"],
    "size": ["mpy_kib"],
    "ota": [
        "ota_stream_kib_s",
        "ota_https_kib_s",
        "ota_stream_heap_live_b",
        "ota_stream32_held_b",
        "ota_verify_ms",
    ],
    "scale": ["scale_devices", "scale_top_p99"],
}


def test_quick_run_measures_every_section(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "results.json").read_text())
    assert data["failures"] == []
    figures = {row["key"]: row for row in data["figures"]}
    for section, keys in EXPECTED.items():
        for key in keys:
            assert key in figures, f"{section}: no figure {key}"
            assert figures[key]["runs"] >= 1 and figures[key]["median"] == figures[key]["median"], key
    # figures that must hold whatever the machine's load
    assert figures["ours_rss_mib"]["median"] > figures["idle_rss_mib"]["median"] > 1
    assert figures["scan_alloc_1024"]["median"] < figures["loads_alloc_1024"]["median"]
    assert 1 <= figures["mpy_kib"]["median"] < 1024 and data["mpy_sizes"]
    # the chip's heap: 32-bit objects are smaller than 64-bit ones, bytecode in place saves RAM,
    # and the boot heap holds at least the transport's buffers and the imported library
    chip = {k: figures[k]["median"] for k in figures if k.startswith("chip_")}
    assert chip["chip_boot_rom64_kib"] < chip["chip_boot_mpy64_kib"]
    assert chip["chip_boot_kib"] < chip["chip_boot_mpy64_kib"]
    assert chip["chip_boot_kib"] * 1024 > chip["chip_buffers_b"] + chip["chip_imports_kib"] * 1024
    assert chip["chip_peak_above_boot_kib"] > 7.8  # the document itself is held during its job
    assert data["chip"]["wasm"]["big_status"].startswith("SUCCEEDED")
    assert data["machine"]["nproc"] >= 1 and data["machine"]["micropython"]
    with (out / "results.csv").open() as handle:
        assert {row["key"] for row in csv.DictReader(handle)} == set(figures)
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "overhead: our per-job latency / floor" in proc.stdout  # the table is printed


def test_bad_argument_is_named():
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--only", "floor,speed"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "unknown section(s) speed" in proc.stderr


def test_bench_sources_are_lint_clean():
    """bench/ is outside `make lint`'s folders (tools, tests); keep it to the same standard."""
    ruff = Path(sys.executable).parent / "ruff"
    for command in (["check", "bench"], ["format", "--check", "bench"]):
        proc = subprocess.run([str(ruff), *command], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
