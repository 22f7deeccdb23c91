# bench/mp_scan.py: the bounded scanner against json.loads inside MicroPython. MIT licence.
"""Usage: MPTEST_MPY=<.mpy folders> micropython bench/mp_scan.py 1024 8192 32768
For each size: a start-next answer of about that many bytes; scan throughput and json.loads
throughput (MB/s), and the bytes each allocates per message (gc disabled while measured).
"""

import gc
import json
import os
import sys
import time

sys.path[:0] = os.getenv("MPTEST_MPY").split(":")
from jobs.scan import Scanner  # noqa: E402

STEP = b'{"path":"/app/mod.py","url":"https://example.com/f?X-Amz-Signature=0123456789abcdef","size":1234},'
HEAD = (
    b'{"timestamp":1747342050,"clientToken":"1a2b3c4d-9","execution":{"jobId":"job-1",'
    b'"status":"IN_PROGRESS","versionNumber":2,"executionNumber":1,'
    b'"jobDocument":{"operation":"ota.files","files":['
)
TAIL = b'{"path":"/last","size":1}]}}}'


def message(size):
    parts = [HEAD]
    n = len(HEAD) + len(TAIL)
    while n + len(STEP) <= size:
        parts.append(STEP)
        n += len(STEP)
    parts.append(TAIL)
    return b"".join(parts)


def allocated(fn):
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    fn()
    used = gc.mem_alloc() - before
    gc.enable()
    return used


def throughput(fn, size, budget_ms=400):
    runs = 0
    t0 = time.ticks_us()
    while True:
        fn()
        runs += 1
        elapsed = time.ticks_diff(time.ticks_us(), t0)
        if elapsed > budget_ms * 1000 and runs >= 3:
            break
    return size * runs / elapsed  # bytes per microsecond = MB/s


def main(sizes):
    sc = Scanner()
    for size in sizes:
        data = message(size)
        n = len(data)
        buf = bytearray(data)

        def scan(sc=sc, buf=buf, n=n):
            f = sc.scan(buf, n)
            if f.job_id != "job-1":
                raise AssertionError("scan found " + repr(f.job_id))

        def loads(data=data):
            doc = json.loads(data)
            if doc["execution"]["jobId"] != "job-1":
                raise AssertionError("json.loads")

        scan()
        loads()
        print("@@bench", size, "bytes", n)
        print("@@bench", size, "scan_alloc", allocated(scan))
        print("@@bench", size, "loads_alloc", allocated(loads))
        print("@@bench", size, "scan_mbs", f"{throughput(scan, n):.3f}")
        print("@@bench", size, "loads_mbs", f"{throughput(loads, n):.3f}")


main([int(a) for a in sys.argv[1:]] or [1024, 8192, 32768])
