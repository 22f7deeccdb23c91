"""AWS IoT OTA (afr_ota): MQTT stream vs HTTPS on the firmware, the stream's heap, the signature check.

    python -m bench.ota [--repeats 3]

* throughput: the simulated device (firmware/main.py on the Unix port) against the stand-in, one
  CreateOTAUpdate of a 1.4 MiB image over MQTT and one over HTTP per repeat; the time from the
  request to the journal's `ota.boot` phase (downloaded, signature checked, read back) gives KiB/s;
* heap: bench/mp_stream.py (.mpy modules, as on a device) downloads a 1 MiB stream file with the
  real link: the live heap after a collection at every block, above the heap before it, and
  the bytes allocated per block with the collector off; bench/mp_stream32.py on the 32-bit
  runtime (object sizes as on the chip; an in-process stream service, that runtime has no
  sockets): what a download holds half-way above the heap before it, and its bytes per block;
* the signature check: bench/signing.py's time per ECDSA P-256 verification.
`measure()` returns {figure key: [samples]} for bench.run.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import BenchError
from bench.micro import MpyModules, run_mp

IMAGE = 1400 * 1024
STREAM_FILE = 1024 * 1024


def throughput(folder: Path, repeats: int) -> dict:
    from tests.host.e2e import Rig, create_update, ota_device, ota_file, put_file
    from tools.simdevice import app_image

    out: dict = {"MQTT": [], "HTTP": []}
    rig = Rig(folder / "ota").start()
    try:
        dev = ota_device(rig, "bench-ota", progress_interval_ms=10000)
        n = 0
        for _ in range(repeats):
            for protocol in ("MQTT", "HTTP"):
                n += 1
                image = app_image(IMAGE, f"2.{n}.0", seed=n)
                location = put_file(rig, f"fw/bench-{n}.bin", image)
                began = time.monotonic()
                job = create_update(rig, f"bench-{n}", dev.name, [ota_file(location)], (protocol,))
                dev.wait_journal(lambda j: j.get("phase") == "ota.boot", timeout=120, what="downloaded")
                seconds = time.monotonic() - began
                done = dev.result(job, timeout=60)
                if done["status"] != "SUCCEEDED":
                    raise BenchError(f"{protocol} update {job}: {done['status']} {done.get('statusDetails')}")
                out[protocol].append(IMAGE / 1024 / seconds)
    finally:
        rig.stop()
    return out


def stream_heap(folder: Path, env: dict) -> dict:
    """bench/mp_stream.py against a stand-in stream: heap above idle and allocation per block."""
    from tests.host.e2e import FAST, ROLE, Rig, put_file
    from tools.simdevice import app_image

    rig = Rig(folder / "heap").start()
    try:
        ident = rig.aws.thing("bench-stream", "ec")
        location = put_file(rig, "fw/bench-stream.bin", app_image(STREAM_FILE, "9.9.9"))
        files = [{"fileId": 0, "s3Location": location}]
        rig.aws.engine.create_stream("bench-stream", {"files": files, "roleArn": ROLE})
        config = {
            "thing_name": "bench-stream",
            "endpoint": "localhost",
            "port": rig.aws.port,
            **FAST,
            "ca": str(rig.aws.ca.cert_der),
            "cert": str(ident.cert_der),
            "key": str(ident.key_der),
            "journal": str(folder / "journal.json"),
        }
        cfg = folder / "stream-config.json"
        cfg.write_text(json.dumps(config))
        figures = {}
        for mode in ("heap", "alloc", "speed"):
            args = [cfg, "bench-stream", 0, STREAM_FILE, folder / "stream.bin", mode]
            values, code, tail = run_mp("mp_stream.py", args, env, timeout=300)
            if code:
                raise BenchError(f"mp_stream.py {mode} failed:\n{tail}")
            figures[mode] = values
        return figures
    finally:
        rig.stop()


def heap32(env: dict) -> dict:
    """bench/mp_stream32.py on the 32-bit runtime: its `@@bench` values."""
    from tools import mpenv

    command = mpenv.wasm_command()
    if command is None:
        raise BenchError("the wasm32 MicroPython (Node.js + build/wasm) is missing: run `make setup`")
    path = mpenv.micropypath(Path(__file__).resolve().parent.parent / "tests" / "device")
    proc = subprocess.run(
        [*command, str(Path(__file__).with_name("mp_stream32.py"))],
        env=dict(os.environ, MICROPYPATH=path, **env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    values = {}
    for line in proc.stdout.splitlines():
        if line.startswith("@@bench "):
            key, value = line.split()[1:3]
            values[key] = value
    if proc.returncode or values.get("completed") != "1":
        raise BenchError(f"mp_stream32.py on wasm32 failed:\n{(proc.stdout + proc.stderr)[-1500:]}")
    return values


def measure(repeats: int = 3) -> dict:
    from bench import signing

    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-ota-") as tmp, MpyModules() as mods:
        folder = Path(tmp)
        speed = throughput(folder, repeats)
        results["stream_kib_s"] = speed["MQTT"]
        results["https_kib_s"] = speed["HTTP"]
        results["stream_vs_https"] = [m / h for m, h in zip(speed["MQTT"], speed["HTTP"], strict=True)]
        heap = stream_heap(folder, mods.env)
        results["stream_heap_live_b"] = [int(heap["heap"]["heap_peak_above_idle"])]
        blocks = int(heap["alloc"]["blocks"])
        results["stream_alloc_per_block_b"] = [int(heap["alloc"]["allocated"]) / blocks]
        results["stream_only_kib_s"] = [STREAM_FILE / 1024 / (int(heap["speed"]["stream_ms"]) / 1000)]
        wasm = heap32(mods.env)
        results["stream32_held_b"] = [int(wasm["held_above_idle"])]
        results["stream32_alloc_per_block_b"] = [int(wasm["allocated_per_block"])]
    checks = signing.measure(count=5, rounds=3)
    results["verify_ms"] = [float(checks["unix"]["verify_ms_median"])]
    results["verify_cpu_ms"] = [float(checks["unix"]["verify_cpu_ms"])]
    if "wasm" in checks:
        results["verify_ms_wasm32"] = [float(checks["wasm"]["verify_ms_median"])]
    return results


FIGURES = {
    "stream_kib_s": ("OTA over the MQTT stream, 1.4 MiB: download + verify", "KiB/s", ""),
    "https_kib_s": ("OTA over HTTPS, 1.4 MiB: download + verify", "KiB/s", ""),
    "stream_vs_https": ("MQTT stream / HTTPS throughput", "x", ""),
    "stream_only_kib_s": ("stream download alone (1 MiB, 4 KiB blocks, into a file)", "KiB/s", ""),
    "stream_heap_live_b": ("live heap above idle during a streamed download", "B", "<= 8192"),
    "stream_alloc_per_block_b": ("heap allocated per 4 KiB stream block", "B", ""),
    "stream32_held_b": ("32-bit: heap a download holds half-way, above idle", "B", "<= 8192"),
    "stream32_alloc_per_block_b": ("32-bit: heap allocated per 4 KiB stream block", "B", ""),
    "verify_ms": ("sig-sha256-ecdsa check (ECDSA P-256 verify)", "ms", ""),
    "verify_cpu_ms": ("sig-sha256-ecdsa check, CPU", "ms", ""),
    "verify_ms_wasm32": ("sig-sha256-ecdsa check, 32-bit WebAssembly", "ms", ""),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        results = measure(args.repeats)
    except BenchError as error:
        print(f"bench.ota: {error}", file=sys.stderr)
        return 1
    for key, samples in results.items():
        name, unit, goal = FIGURES[key]
        value = statistics.median(samples)
        spread = f" ({min(samples):.1f}-{max(samples):.1f})" if len(samples) > 1 else ""
        print(f"  {name:62} {value:10.1f} {unit}{spread}{'  goal ' + goal if goal else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
