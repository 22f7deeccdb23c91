# Throughput and allocation of jobs.scan against json.loads, inside MicroPython.
"""Usage: MICROPYPATH=lib micropython tests/device/bench_scan.py

Jobs-shaped start-next answers of 1, 8 and 32 KiB (an ota.files document with many entries),
compact and pretty-printed. For each: the scanner on the whole buffer, the scanner streaming
through 8 KiB chunks, and json.loads; mean time per message, MB/s, and bytes allocated by one
message (gc disabled, so garbage counts too).
"""

import gc
import io
import json
import time

from jobs.scan import Scanner


def message(size, pretty):
    files = []
    doc = {
        "timestamp": 1747342050,
        "clientToken": "1a2b3c4d-17",
        "execution": {
            "jobId": "job-42",
            "status": "QUEUED",
            "queuedAt": 1747342049,
            "lastUpdatedAt": 1747342049,
            "versionNumber": 1,
            "executionNumber": 1,
            "jobDocument": {"operation": "ota.files", "version": "1.2.3", "files": files},
        },
    }

    def encode():
        text = json.dumps(doc)
        if pretty:  # two-space indentation, as a person writes a document
            out, depth, in_str, esc = io.StringIO(), 0, False, False
            for ch in text:
                if in_str:
                    out.write(ch)
                    esc = ch == "\\" and not esc
                    in_str = ch != '"' or esc
                elif ch in "{[":
                    depth += 1
                    out.write(ch + "\n" + "  " * depth)
                elif ch in "}]":
                    depth -= 1
                    out.write("\n" + "  " * depth + ch)
                elif ch == ",":
                    out.write(",\n" + "  " * depth)
                elif ch == " ":
                    pass
                elif ch == ":":
                    out.write(": ")
                else:
                    out.write(ch)
                    in_str = ch == '"'
            text = out.getvalue()
        return text.encode()

    k = 0
    while True:
        files.append(
            {
                "path": "/app/mod" + str(k) + ".py",
                "url": "https://example.com/f/mod"
                + str(k)
                + ".py?X-Amz-Signature=0123456789abcdef0123456789",
                "sha256": "0123456789abcdef" * 4,
                "size": 1234 + k,
            }
        )
        if len(encode()) > size:
            files.pop()
            break
        k += 1
    data = encode()
    return bytearray(data + b" " * (size - len(data)))


def timed(fn, reps):
    """Best of 5 rounds (the machine is shared): mean microseconds per call."""
    fn()
    best = None
    for _ in range(5):
        t0 = time.ticks_us()
        for _ in range(reps):
            fn()
        took = time.ticks_diff(time.ticks_us(), t0) / reps
        best = took if best is None else min(best, took)
    return best


def allocated(fn):
    fn()
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    try:
        fn()
        return gc.mem_alloc() - before
    except MemoryError:
        return -1
    finally:
        gc.enable()


def main():
    sc = Scanner()
    chunk = bytearray(8192)

    def streamed(buf, n):
        sc.begin()
        at = 0
        while at < n:
            k = min(8192, n - at)
            chunk[:k] = buf[at : at + k]
            sc.feed(chunk, k)
            at += k
        return sc.end()

    print("size  layout  scan(us)  MB/s  stream MB/s  alloc(B) | json.loads(us)  MB/s  alloc(B)")
    for size in (1024, 8192, 32768):
        for pretty in (False, True):
            buf = message(size, pretty)
            n = len(buf)
            f = sc.scan(buf, n)
            assert f.job_id == "job-42" and f.version_number == 1
            reps = max(3, 100000 // size)
            t_scan = timed(lambda: sc.scan(buf, n), reps)  # noqa: B023 - used at once
            t_stream = timed(lambda: streamed(buf, n), reps)  # noqa: B023
            t_json = timed(lambda: json.loads(buf), reps)  # noqa: B023
            a_scan = allocated(lambda: sc.scan(buf, n))  # noqa: B023
            a_json = allocated(lambda: json.loads(buf))  # noqa: B023
            layout = "pretty" if pretty else "compact"
            row = (size, layout, t_scan, n / t_scan, n / t_stream, a_scan, t_json, n / t_json, a_json)
            print("%5d  %-7s %8.0f  %4.1f  %11.1f  %8d | %14.0f  %4.1f  %8d" % row)  # noqa: UP031 - MicroPython


main()
