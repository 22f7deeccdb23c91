"""Run every benchmark, print the table of figures and ratios, write bench/results/.

    python -m bench.run [--repeats 5] [--jobs 200] [--cycles 10000] [--only floor,device,...]

Sections: floor (broker round trip, service processing, minimal paho device), device (ours on
the MicroPython Unix port), peer (AWS IoT Device SDK v2 for Python), heap, chip (the firmware's
heap as the chip counts it: 32-bit, and with the bytecode in place), scanner, size, journal,
ota (AWS IoT OTA: stream vs HTTPS, stream heap, signature check), scale.
Each figure is the median over the repeats, with min and max. Results: results.json,
results.csv and results.png under --out (default bench/results/). Exit status 1 when a section
failed (the message says which and why); a missed goal is reported, not an error.
"""

import argparse
import csv
import json
import signal
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import chip, device, floor, micro, ota, peer, scale
from bench.common import (
    ROOT,
    BenchError,
    Figure,
    ServiceDied,
    cancel_pending,
    check_service,
    idle_micropython_rss_kib,
    machine,
)
from bench.service import BenchStandIn

SECTIONS = ("floor", "device", "peer", "heap", "chip", "scanner", "size", "journal", "ota", "scale")


class Bench:
    def __init__(self, args):
        self.args = args
        self.figures: dict = {}
        self.extra: dict = {}
        self.failures: list = []
        self.attempt = 0  # part of job ids, so a round run again never reuses one

    def fig(self, key, name, unit, goal="", note="") -> Figure:
        if key not in self.figures:
            self.figures[key] = Figure(name, unit, goal=goal, note=note)
        return self.figures[key]

    def add(self, key, value, *meta) -> None:
        self.fig(key, *meta).samples.append(value)

    def say(self, text: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)

    def section(self, name, fn, *args) -> None:
        if name not in self.args.only:
            return
        began = time.monotonic()
        try:
            try:
                fn(*args)
            except ServiceDied as died:
                # a crash of the stand-in, not of the device measured: note it, restart, run again once
                self.extra.setdefault("service_crashes", []).append(f"{name}: {died}")
                self.say(f"{name}: {died}; restarting the service and running this round again")
                aws = args[0]
                aws.start_service()
                for thing in ("bench-min", "bench-dev", "bench-sdk"):
                    cancel_pending(aws, thing)
                self.attempt += 1
                fn(*args)
        except BenchError as err:
            self.failures.append(f"{name}: {err}")
            self.say(f"{name} FAILED: {err}")
        except Exception as err:  # noqa: BLE001 - report and go on with the other sections
            self.failures.append(f"{name}: {err!r}")
            self.say(f"{name} FAILED:\n{traceback.format_exc()}")
        self.extra.setdefault("section_seconds", {})[name] = round(time.monotonic() - began, 1)

    # ----- 1-3: jobs through the stand-in ------------------------------------------------
    def jobs(self, folder: Path) -> None:
        a, n = self.args, self.args.jobs
        with BenchStandIn(folder / "aws") as aws:
            if "floor" in a.only:
                self.section("floor", self.service_floor)
            for r in range(a.repeats):
                self.say(f"jobs round {r + 1}/{a.repeats}: {n} jobs each")
                self.section("floor", self.floor_round, aws, r)
                self.section("device", self.device_round, aws, folder, r)
                self.section("peer", self.peer_round, aws, folder, r)
        if "device" in a.only:
            self.section("device", self.idle_rss)
        if "floor" in a.only and a.shipped_service:
            self.section("floor", self.shipped_service, folder)
        self.ratios()

    def service_floor(self) -> None:
        per_job, profile = floor.service_processing(self.args.jobs, profile=True)
        self.extra["service_profile"] = profile
        self.add(
            "service_ms",
            statistics.median(per_job) * 1000,
            "service processing per job",
            "ms",
            "",
            "stand-in engine in-process: start-next + update",
        )

    def floor_round(self, aws, r) -> None:
        rtt = floor.broker_rtt(aws, "bench-floor", self.args.rtt_samples)
        self.add("rtt_ms", statistics.median(rtt) * 1000, "broker round trip (paho, mTLS, QoS 1)", "ms")
        minimal = floor.MinimalDevice(aws, "bench-min")
        ids = device.gpio_jobs(aws, "bench-min", f"min{r}-{self.attempt}", self.args.jobs)
        span = minimal.run(aws, ids, "bench-min", self.args.timeout)
        self.add("minimal_ms", span / len(ids) * 1000, "minimal paho device per job (measured)", "ms")

    def device_round(self, aws, folder, r) -> None:
        result = device.run_once(
            aws, "bench-dev", folder / "dev", f"dev{r}-{self.attempt}", self.args.jobs, self.args.timeout
        )
        self.add("ours_ms", result["span"] / self.args.jobs * 1000, "our device per job", "ms")
        self.add("ours_jobs_s", self.args.jobs / result["span"], "our device throughput", "jobs/s")
        self.add("ours_cpu_ms", result["cpu"] / self.args.jobs * 1000, "our device CPU per job", "ms")
        self.add("ours_rss_mib", result["rss_kib"] / 1024, "our device peak RSS", "MiB")

    def peer_round(self, aws, folder, r) -> None:
        result = peer.run_once(
            aws, "bench-sdk", folder, f"sdk{r}-{self.attempt}", self.args.jobs, self.args.timeout
        )
        self.add("peer_ms", result["span"] / self.args.jobs * 1000, "SDK v2 device per job", "ms")
        self.add("peer_jobs_s", self.args.jobs / result["span"], "SDK v2 device throughput", "jobs/s")
        self.add("peer_cpu_ms", result["cpu"] / self.args.jobs * 1000, "SDK v2 device CPU per job", "ms")
        self.add("peer_rss_mib", result["rss_kib"] / 1024, "SDK v2 device peak RSS", "MiB")

    def idle_rss(self) -> None:
        for _ in range(min(3, self.args.repeats)):
            self.add(
                "idle_rss_mib",
                idle_micropython_rss_kib() / 1024,
                "idle `micropython` wrapper peak RSS",
                "MiB",
            )

    def shipped_service(self, folder) -> None:
        """Once, for the record: the minimal device against the service as shipped (Nagle on)."""
        with BenchStandIn(folder / "aws-shipped", nodelay=False) as aws:
            minimal = floor.MinimalDevice(aws, "bench-min")
            count = min(self.args.jobs, 50)
            ids = device.gpio_jobs(aws, "bench-min", "shipped", count)
            span = minimal.run(aws, ids, "bench-min", self.args.timeout)
        self.add(
            "shipped_minimal_ms",
            span / count * 1000,
            "minimal device, service as shipped (no TCP_NODELAY)",
            "ms",
            "",
            "not used in ratios",
        )

    def ratios(self) -> None:
        f = self.figures

        def pairs(a, b, fn):
            if a in f and b in f:
                return [fn(x, y) for x, y in zip(f[a].samples, f[b].samples, strict=False)]
            return []

        if "rtt_ms" in f and "service_ms" in f:
            svc = f["service_ms"].median
            for rtt in f["rtt_ms"].samples:
                self.add("floor_ms", 2 * rtt + svc, "floor per job = 2 x RTT + service", "ms")
        for value in pairs("ours_ms", "floor_ms", lambda x, y: x / y):
            self.add("overhead", value, "overhead: our per-job latency / floor", "x", "<= 1.3")
        for value in pairs("ours_ms", "minimal_ms", lambda x, y: x / y):
            self.add("vs_minimal", value, "our per-job latency / minimal paho device", "x")
        for value in pairs("ours_jobs_s", "peer_jobs_s", lambda x, y: x / y):
            self.add("jobs_ratio", value, "jobs/s: ours / SDK v2", "x", ">= 1.0")
        for value in pairs("ours_rss_mib", "peer_rss_mib", lambda x, y: x / y):
            self.add("rss_ratio", value, "peak RSS: ours / SDK v2", "x", "<= 0.5")
        if "idle_rss_mib" in f:
            idle = f["idle_rss_mib"].median
            for ours, sdk in zip(
                f.get("ours_rss_mib", Figure("", "")).samples,
                f.get("peer_rss_mib", Figure("", "")).samples,
                strict=False,
            ):
                self.add("ours_above_idle_mib", ours - idle, "our RSS above the idle wrapper", "MiB")
                self.add(
                    "rss_above_idle_ratio",
                    (ours - idle) / sdk,
                    "RSS above idle wrapper / SDK v2 RSS",
                    "x",
                    "<= 0.5",
                )

    # ----- 4-6: inside MicroPython ------------------------------------------------------
    def micro(self) -> None:
        with micro.MpyModules() as mods:
            self.section("size", self.size, mods.env)
            self.section("scanner", self.scanner, mods.env)
            self.section("heap", self.heap, mods.env)
            self.section("chip", self.chip, mods.env)
            self.section("journal", self.journal, mods.env)

    def size(self, env) -> None:
        with tempfile.TemporaryDirectory(prefix="bench-mpy-") as out:
            sizes = micro.mpy_sizes(Path(out))
        self.extra["mpy_sizes"] = dict(sorted(sizes.items(), key=lambda kv: -kv[1]))
        self.add(
            "mpy_kib",
            sum(sizes.values()) / 1024,
            f"library .mpy total ({len(sizes)} modules)",
            "KiB",
            "<= 40",
        )

    def journal(self, env) -> None:
        values, code, tail = micro.run_mp("mp_journal.py", [50], env, timeout=120)
        if code:
            raise BenchError(f"mp_journal.py failed:\n{tail}")
        for op, goal in (("gpio.write", "<= 1"), ("diag.echo", "<= 1"), ("gpio.pulse", "")):
            self.add(
                f"journal_{op}", float(values[f"journal_{op}"]), f"journal writes per {op} job", "", goal
            )

    def scanner(self, env) -> None:
        for _ in range(self.args.repeats):
            values = micro.scanner(env, self.args.scan_sizes)
            for size in self.args.scan_sizes:
                label = f"{size // 1024} KiB" if size >= 1024 else f"{size} B"
                scan, loads = float(values[f"{size} scan_mbs"]), float(values[f"{size} loads_mbs"])
                self.add(f"scan_mbs_{size}", scan, f"scanner {label}: throughput", "MB/s")
                self.add(f"loads_mbs_{size}", loads, f"json.loads {label}: throughput", "MB/s")
                self.add(f"scan_vs_loads_{size}", scan / loads, f"scanner / json.loads speed, {label}", "x")
                self.add(
                    f"scan_alloc_{size}",
                    int(values[f"{size} scan_alloc"]),
                    f"scanner {label}: allocated",
                    "B/msg",
                )
                self.add(
                    f"loads_alloc_{size}",
                    int(values[f"{size} loads_alloc"]),
                    f"json.loads {label}: allocated",
                    "B/msg",
                )

    def heap(self, env) -> None:
        a = self.args
        self.say(f"heap: bisecting -X heapsize with {a.search_cycles} cycles, confirming with {a.cycles}")
        smallest, values = micro.smallest_heap(env, a.cycles, a.search_cycles)
        self.add(
            "heap_min_kib",
            smallest,
            f"smallest heap for {a.cycles} job cycles (8 KiB docs)",
            "KiB",
            "<= 32",
            "64-bit Unix port, .mpy on the heap",
        )
        drift = int(values["heap_at_end"]) - int(values["heap_at_100"])
        self.add(
            "heap_drift_b",
            abs(drift),
            f"heap after gc: |cycle {a.cycles} - cycle 100|",
            "B",
            "<= 256",
            f"{values['heap_at_100']} -> {values['heap_at_end']}",
        )
        code = int(values["heap_code"])
        self.add("heap_code_kib", code / 1024, "of which: modules the rig imports (.mpy bytecode)", "KiB")
        self.add(
            "heap_without_code_kib",
            smallest - code / 1024,
            "smallest heap less that bytecode (a frozen library)",
            "KiB",
            "<= 32",
        )
        self.add("cycle_us", int(values["cycle_us"]) / 1000, "job cycle in-process at that heap", "ms")
        other = micro.import_and_stream(env)
        self.add(
            "stream_alloc_b",
            int(other["stream_allocated"]),
            "heap allocated while 128 KiB streams",
            "B",
            "<= 512",
        )
        self.add(
            "import_kib",
            int(other["import_bytes"]) / 1024,
            f"import cost of lib/ ({other['modules']} .mpy)",
            "KiB",
        )

    # ----- AWS IoT OTA: stream vs HTTPS, the stream's heap, the signature check ----------
    def ota(self) -> None:
        for key, samples in ota.measure(min(self.args.repeats, 3)).items():
            name, unit, goal = ota.FIGURES[key]
            for value in samples:
                self.add(f"ota_{key}", value, name, unit, goal)

    def chip(self, env) -> None:
        """The firmware's heap as the chip counts it (bench/chip.py, docs/benchmarks.md)."""
        jobs = self.args.chip_jobs
        self.say(f"chip: boot, {jobs} jobs and a 7.8 KB-document job on the 32-bit runtime; ROMFS boot")
        with tempfile.TemporaryDirectory(prefix="bench-chip-") as tmp:
            got = chip.measure(Path(tmp), env, jobs)
        w, rom, mpy64 = got["wasm"], got["unix_rom"], got["unix_mpy"]
        self.extra["chip"] = got
        kib = 1024
        boot = int(w["boot_heap"])
        saved = int(mpy64["boot_heap"]) - int(rom["boot_heap"])
        self.add(
            "chip_boot_kib",
            boot / kib,
            "boot heap, 32-bit, library as .mpy",
            "KiB",
            "<= 48",
            "wasm32; main.py to the engine's loop, buffers included; umqtt as frozen",
        )
        self.add(
            "chip_boot_inplace_kib",
            (boot - saved) / kib,
            "boot heap, 32-bit, bytecode in place (estimate)",
            "KiB",
            "<= 28",
            "32-bit .mpy figure less what ROMFS saves on the 64-bit Unix port",
        )
        self.add(
            "chip_boot_rom64_kib", int(rom["boot_heap"]) / kib, "boot heap, ROMFS in place, 64-bit", "KiB"
        )
        self.add("chip_boot_mpy64_kib", int(mpy64["boot_heap"]) / kib, "boot heap, .mpy, 64-bit", "KiB")
        self.add(
            "chip_steady_drift_b",
            int(w["steady_heap"]) - boot,
            f"heap after {w['jobs_done']} jobs - boot, 32-bit",
            "B",
            "<= 1024",
            "real operations; includes the ones imported on first use",
        )
        self.add(
            "chip_warm_drift_b",
            int(w["steady_heap"]) - int(w["warm_heap"]),
            f"heap after {w['jobs_done']} jobs - after the first 5, 32-bit",
            "B",
            "",
            "every operation used is loaded by then: a leak shows here",
        )
        self.add(
            "chip_peak_above_boot_kib",
            (int(w["big_peak"]) - boot) / kib,
            "7.8 KB-document job: peak - boot, 32-bit",
            "KiB",
            "<= 16",
            "upper bound: nothing is collected inside an engine step on wasm32",
        )
        self.add(
            "chip_boot_high_kib", int(w["boot_high"]) / kib, "boot: allocated before any collection", "KiB"
        )
        self.add("chip_buffers_b", int(w["boot_buffers"]), "of the boot heap: transport buffers", "B")
        self.add(
            "chip_der_b", int(w["boot_der_kept"]), "of the boot heap: certificates/keys the link keeps", "B"
        )
        boot_modules = set(w["boot_modules"].split(","))
        costs = sorted(got["imports"].items(), key=lambda kv: -kv[1])
        at_boot = sum(v for k, v in costs if k in boot_modules)
        self.add("chip_imports_kib", at_boot / kib, "of the boot heap: importing the library", "KiB")
        self.say(
            "chip: import cost on 32-bit (B; * = loaded at boot): "
            + ", ".join(f"{k}{'*' if k in boot_modules else ''} {v}" for k, v in costs)
        )
        trace = {k[len("big_alloc ") :]: int(v) for k, v in w.items() if k.startswith("big_alloc ")}
        self.say("chip: allocated during the 7.8 KB job (B, nested calls overlap): " + json.dumps(trace))

    # ----- 7: scale -----------------------------------------------------------------------
    def scale(self, folder: Path) -> None:
        steps, best, rows, misses = self.args.scale_steps, 0, [], 0
        with BenchStandIn(folder / "aws-scale") as aws:
            for count in steps:
                self.say(f"scale: {count} devices x {self.args.scale_jobs} jobs")
                row = self.scale_step(aws, count)
                rows.append(row)
                self.say(f"scale: {count} devices: p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms")
                if row["p99_ms"] <= 50 and row["succeeded"] == count * self.args.scale_jobs:
                    best, misses = count, 0
                    continue
                misses += 1  # one outlier makes a small step's p99: stop after two misses in a row
                if misses >= 2 and count != steps[-1]:
                    # larger counts only queue longer: measure the last (the goal) once for the record
                    rows.append(self.scale_step(aws, steps[-1]))
                    break
        self.extra["scale_steps"] = rows
        self.add(
            "scale_devices",
            best,
            "devices served at p99 <= 50 ms (5 jobs each)",
            "devices",
            f">= {steps[-1] if self.args.quick else 500}",
        )
        top = rows[-1]
        self.add("scale_top_p99", top["p99_ms"], f"p99 at {top['devices']} devices", "ms")

    def scale_step(self, aws, count: int) -> dict:
        """One load-test step, run again once if it fails (a crashed service is restarted first)."""
        timeout = min(self.args.timeout, 30 + count * 0.2)
        for attempt in (1, 2):
            try:
                check_service(aws)
                return scale.step(aws, count, self.args.scale_jobs, f"s{count}-{attempt}", timeout)
            except (ServiceDied, TimeoutError, RuntimeError) as err:
                problem = str(err)
                try:
                    check_service(aws)
                except ServiceDied as died:
                    problem = str(died)
                    aws.start_service()
                self.extra.setdefault("scale_retries", []).append(f"{count} devices: {problem}")
                self.say(f"scale: {count} devices: {problem}")
                if attempt == 2:
                    raise BenchError(f"scale: {count} devices, twice: {problem}") from None
        raise AssertionError("unreachable")

    # ----- output -------------------------------------------------------------------------
    def write(self, out: Path, info: dict) -> None:
        out.mkdir(parents=True, exist_ok=True)
        rows = [{"key": k, **f.row()} for k, f in self.figures.items()]
        data = {
            "machine": info,
            "args": {k: v for k, v in vars(self.args).items()},
            "figures": rows,
            "samples": {k: f.samples for k, f in self.figures.items()},
            "failures": self.failures,
            **self.extra,
        }
        (out / "results.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
        with (out / "results.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["key"])
            writer.writeheader()
            writer.writerows(rows)
        (out / "results.md").write_text(self.markdown(info))
        try:
            from bench.plot import plot

            plot(self.figures, self.extra, info, out / "results.png")
        except Exception as err:  # noqa: BLE001 - a missing plot must not lose the figures
            self.failures.append(f"plot: {err!r}")

    def markdown(self, info: dict) -> str:
        """The table for docs/benchmarks.md."""
        head = (
            f"{info['date']}; {info['nproc']} x {info['cpu']}; Python {info['python']}; "
            f"MicroPython {info['micropython']}; load {info['load_1min_at_start']} at start; "
            f"{self.args.repeats} repeats\n\n"
        )
        lines = ["| figure | median | min | max | unit | goal | met |", "|---|---|---|---|---|---|---|"]
        for f in self.figures.values():
            r = f.row()
            lines.append(
                f"| {r['name']} | {r['median']:.4g} | {r['min']:.4g} | {r['max']:.4g} | {r['unit']} "
                f"| {r['goal']} | {r['met']} |"
            )
        return head + "\n".join(lines) + "\n"

    def table(self) -> str:
        lines = [f"{'figure':58} {'median':>10} {'min':>10} {'max':>10}  {'unit':8} {'goal':8} met"]
        for f in self.figures.values():
            r = f.row()
            lines.append(
                f"{r['name'][:58]:58} {r['median']:10.3f} {r['min']:10.3f} {r['max']:10.3f}  "
                f"{r['unit']:8} {r['goal']:8} {r['met']}"
            )
        return "\n".join(lines)


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=200, help="queued jobs per device run")
    parser.add_argument("--rtt-samples", type=int, default=200)
    parser.add_argument("--cycles", type=int, default=10000, help="job cycles for the heap figure")
    parser.add_argument("--search-cycles", type=int, default=1000, help="cycles per heap bisection step")
    parser.add_argument("--chip-jobs", type=int, default=1000, help="jobs for the 32-bit steady-state figure")
    parser.add_argument("--scan-sizes", default="1024,8192,32768")
    parser.add_argument("--scale-steps", default="1,2,5,10,25,50,100,250,500")
    parser.add_argument("--scale-jobs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=180, help="seconds for one run of one device")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma list of " + ",".join(SECTIONS))
    parser.add_argument(
        "--no-shipped-service",
        dest="shipped_service",
        action="store_false",
        help="skip the one run against the service as shipped (no TCP_NODELAY)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--quick", action="store_true", help="a tiny configuration to check the harness")
    args = parser.parse_args(argv)
    if args.quick:  # the harness end to end in seconds (tests/host/test_bench_smoke.py): no figures to quote
        args.repeats, args.jobs, args.rtt_samples, args.cycles, args.search_cycles = 1, 3, 10, 100, 20
        args.chip_jobs = 10
        args.scan_sizes, args.scale_steps, args.shipped_service = "1024", "2", False
    args.only = [s for s in args.only.split(",") if s]
    unknown = [s for s in args.only if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    try:
        args.scan_sizes = [int(s) for s in args.scan_sizes.split(",")]
        args.scale_steps = [int(s) for s in args.scale_steps.split(",")]
    except ValueError:
        parser.error("--scan-sizes and --scale-steps take comma-separated integers")
    if min(args.repeats, args.jobs, args.cycles, args.search_cycles, args.chip_jobs) < 1 or args.cycles < 100:
        parser.error("--repeats, --jobs, --search-cycles, --chip-jobs must be >= 1 and --cycles >= 100")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C, so every process started is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    began = time.monotonic()
    info = machine()
    bench = Bench(args)
    bench.say(f"{info['nproc']} x {info['cpu']}; Python {info['python']}; MicroPython {info['micropython']}")
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        folder = Path(tmp)
        if {"floor", "device", "peer"} & set(args.only):
            bench.jobs(folder)
        if {"heap", "chip", "scanner", "size", "journal"} & set(args.only):
            bench.micro()
        if "ota" in args.only:
            bench.section("ota", bench.ota)
        if "scale" in args.only:
            bench.section("scale", bench.scale, folder)
    info["seconds"] = round(time.monotonic() - began, 1)
    bench.write(args.out, info)
    print(bench.table())
    print(f"results: {args.out}/results.json, .csv, .md, .png ({info['seconds']:.0f} s)")
    for failure in bench.failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
