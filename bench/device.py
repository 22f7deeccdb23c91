"""Our device (firmware/main.py on the MicroPython Unix port, tools.simdevice) running N queued jobs."""

import time
from pathlib import Path

from bench.common import BenchError, cpu_seconds, job_span, peak_rss_kib, wait_all_terminal
from tools.simdevice import SimDevice, provision


def gpio_jobs(aws, thing: str, tag: str, count: int) -> list:
    """Queue `count` gpio.write jobs for `thing`; their ids in queue order."""
    ids = []
    for i in range(count):
        job_id = f"{tag}-{i:04d}"
        aws.create_job(job_id, {"operation": "gpio.write", "pin": "LED", "value": i % 2}, [thing])
        ids.append(job_id)
    return ids


def prepare(aws, thing: str, root: Path, heapsize: str | None = None) -> SimDevice:
    ident = aws.thing(thing, "ec")
    provision(
        root,
        {"thing_name": thing, "endpoint": "localhost", "port": aws.port, "telemetry_interval_s": 0},
        aws.ca.cert_der,
        ident.cert_der,
        ident.key_der,
    )
    return SimDevice(root, heapsize=heapsize)


def run_once(aws, thing: str, root: Path, tag: str, count: int, timeout: float, heapsize=None) -> dict:
    """Queue the jobs, boot the device, wait until all are done; span (s) and peak RSS (KiB)."""
    device = prepare(aws, thing, root, heapsize)
    job_ids = gpio_jobs(aws, thing, tag, count)
    device.start()
    rss, cpu = 0, 0.0
    try:
        cpu_before = _cpu_when_started(aws, job_ids[0], thing, device, timeout)
        counts = wait_all_terminal(
            aws, job_ids, thing, timeout, alive=lambda: not device.exits or device.exits[-1] == 75
        )
        time.sleep(0.2)  # the last answer handled: the process is at its steady state
        if device.process is not None:
            rss = peak_rss_kib(device.process.pid)
            cpu = cpu_seconds(device.process.pid) - cpu_before
    except BenchError as err:
        raise BenchError(f"{err}; device log tail:\n{device.output()[-1500:]}") from None
    finally:
        device.stop()
    if counts.get("SUCCEEDED") != count:
        raise BenchError(
            f"our device: {counts} (expected {count} SUCCEEDED); log:\n{device.output()[-1500:]}"
        )
    return {"span": job_span(aws, job_ids, thing), "rss_kib": rss, "cpu": cpu}


def _cpu_when_started(aws, first_job: str, thing: str, device: SimDevice, timeout: float) -> float:
    """The device's CPU seconds when its first job leaves QUEUED (boot and TLS handshake excluded)."""
    deadline = time.monotonic() + timeout
    while aws.describe_execution(first_job, thing)["status"] == "QUEUED":
        if time.monotonic() > deadline:
            raise BenchError(f"{thing}: the device did not start a job within {timeout:.0f}s")
        time.sleep(0.002)
    return cpu_seconds(device.process.pid) if device.process is not None else 0.0
