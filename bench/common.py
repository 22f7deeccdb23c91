"""Shared helpers: repeated measurements, process memory, the machine, clean-up of processes."""

import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class BenchError(RuntimeError):
    """A benchmark could not run; the message says which and why."""


@dataclass
class Figure:
    """One measured quantity over repeated runs (median, min, max) and its goal, if any."""

    name: str
    unit: str
    samples: list = field(default_factory=list)
    goal: str = ""  # e.g. "<= 1.3"
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def low(self) -> float:
        return min(self.samples) if self.samples else float("nan")

    @property
    def high(self) -> float:
        return max(self.samples) if self.samples else float("nan")

    def met(self):
        """True/False against the goal (on the median), None without a goal or a sample."""
        if not self.goal or not self.samples:
            return None
        op, limit = self.goal.split()
        value, limit = self.median, float(limit)
        return value <= limit if op == "<=" else value >= limit

    def row(self) -> dict:
        met = self.met()
        return {
            "name": self.name,
            "unit": self.unit,
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "runs": len(self.samples),
            "goal": self.goal,
            "met": "" if met is None else ("yes" if met else "NO"),
            "note": self.note,
        }


def micropython_binary() -> str:
    from tools.simdevice import micropython_binary as find

    return find()


def peak_rss_kib(pid: int) -> int:
    """Peak resident set (VmHWM) of a live process, KiB; 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process so far (s); 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def idle_micropython_rss_kib() -> int:
    """Peak RSS of the PyPI `micropython` wrapper doing nothing (a CPython process hosting the port)."""
    proc = subprocess.Popen([micropython_binary(), "-c", "import time; time.sleep(2)"])
    try:
        time.sleep(1.5)
        return peak_rss_kib(proc.pid)
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`: every process the bench starts goes through here."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mp = subprocess.run(
            [
                micropython_binary(),
                "-c",
                "import sys; v = sys.implementation.version; "
                "print('%d.%d.%d' % v[:3] + ('-' + v[3] if len(v) > 3 and v[3] else ''), "
                "'(' + sys.version.split('; ')[-1] + ', ' + str(sys.implementation._machine) + ')')",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        mp = "unknown"
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": os.cpu_count(),
        "cpu": cpu or platform.processor(),
        "python": sys.version.split()[0],
        "micropython": mp,
        "kernel": platform.release(),
        "load_1min_at_start": round(load, 2),
    }


def pick(samples, p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] if ordered else float("nan")


def job_span(aws, job_ids, thing: str) -> float:
    """Seconds from the first execution's start (service clock) to the last one's final update."""
    first = aws.describe_execution(job_ids[0], thing)
    last = aws.describe_execution(job_ids[-1], thing)
    return float(last["lastUpdatedAt"]) - float(first["startedAt"])


class ServiceDied(BenchError):
    """The stand-in's Jobs service process ended during a run (the run is not a measurement)."""


def check_service(aws) -> None:
    if aws.service is None or aws.service.poll() is not None:
        code = None if aws.service is None else aws.service.returncode
        raise ServiceDied(f"the stand-in's Jobs service exited (status {code}): {aws._service_log()[-600:]}")


def cancel_pending(aws, thing: str) -> None:
    """Cancel what a failed run left queued or in progress for `thing`, so the next run starts clean."""
    from tools.standin.core import TERMINAL

    for summary in aws.engine.list_executions_for_thing(thing)["executionSummaries"]:
        if summary["jobExecutionSummary"]["status"] not in TERMINAL:
            aws.cancel_job(summary["jobId"], force=True)


def wait_all_terminal(aws, job_ids, thing: str, timeout: float, alive=None) -> dict:
    """Wait until every execution is terminal (in order, so polling the last is enough first)."""
    from tools.standin.core import TERMINAL

    deadline = time.monotonic() + timeout
    while True:
        last = aws.describe_execution(job_ids[-1], thing)
        if last["status"] in TERMINAL:
            break
        if alive is not None and not alive():
            raise BenchError(f"{thing}: the device process ended before the jobs were done")
        check_service(aws)
        if time.monotonic() > deadline:
            done = sum(1 for j in job_ids if aws.describe_execution(j, thing)["status"] in TERMINAL)
            raise BenchError(f"{thing}: only {done}/{len(job_ids)} jobs terminal after {timeout:.0f}s")
        time.sleep(0.05)
    counts: dict = {}
    for job_id in job_ids:
        status = aws.describe_execution(job_id, thing)["status"]
        counts[status] = counts.get(status, 0) + 1
    return counts
