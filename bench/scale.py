"""Service scale: the stand-in's load test (tools/standin/loadtest.py) at growing device counts."""

import resource

from tools.standin import loadtest


def raise_file_limit(devices: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = devices * 2 + 200
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed), hard))


def step(aws, devices: int, jobs: int, tag: str, timeout: float) -> dict:
    raise_file_limit(devices)
    result = loadtest.run(aws, devices, jobs, timeout=timeout, prefix=tag)
    return {
        "devices": devices,
        "jobs": jobs,
        "seconds": result.seconds,
        "requests": result.requests,
        "p50_ms": result.percentile(50) * 1000,
        "p99_ms": result.percentile(99) * 1000,
        "succeeded": result.terminal.get("SUCCEEDED", 0),
        "errors": result.errors,
    }
