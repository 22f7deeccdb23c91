# bench/mp_heap.py: heap figures inside MicroPython (run by bench/heap.py). MIT licence.
"""Usage (MICROPYPATH with tests/device; MPTEST_MPY = the .mpy folders, put first on sys.path):
    micropython -X heapsize=N bench/mp_heap.py cycles 10000   # job cycles on the fake service
    micropython bench/mp_heap.py import                      # heap taken by importing lib/ (.mpy)
    micropython bench/mp_heap.py stream 131072               # heap allocated while a message streams
Prints `@@bench key value` lines; exit status 0 only when everything completed.
"""

import gc
import os
import sys
import time

sys.path[:0] = os.getenv("MPTEST_MPY").split(":")

PAD = "x" * 7800  # with the execution envelope the message still fits the 8 KiB buffer
DOCS = (
    {"operation": "test.echo", "value": 1},
    {"operation": "test.steps", "n": 2},
    {"operation": "test.fail"},
    {"operation": "nope"},
    {"operation": "test.echo", "value": 2, "pad": PAD},  # a document near the 8 KiB limit
)


def report(key, value):
    print("@@bench", key, value)


def cycles(count):
    gc.collect()
    start = gc.mem_alloc()
    from enginerig import Rig

    gc.collect()
    report("heap_code", gc.mem_alloc() - start)  # modules the rig loads: in RAM as .mpy, not when frozen
    rig = Rig(max_document=8192, buffer_size=8192)
    rig.logs = None
    rig.client.log = rig.engine.log = lambda *a: None
    rig.service.record = False
    eng, svc, link = rig.engine, rig.service, rig.link
    eng.step()
    marks = {}
    t0 = time.ticks_ms()
    for i in range(1, count + 1):
        done = eng.jobs_ok + eng.jobs_failed
        link.push(svc.create("job-" + str(i), DOCS[i % len(DOCS)]))
        for _ in range(50):
            eng.step()
            if eng.jobs_ok + eng.jobs_failed > done:
                break
        if eng.jobs_ok + eng.jobs_failed != done + 1:
            raise AssertionError("cycle " + str(i) + " did not finish")
        if i == min(100, count) or i == count:
            gc.collect()
            marks[i] = gc.mem_alloc()
    elapsed = time.ticks_diff(time.ticks_ms(), t0)
    report("heap_start", start)
    report("heap_at_100", marks[min(100, count)])
    report("heap_at_end", marks[count])
    report("cycle_us", elapsed * 1000 // count)
    report("jobs_ok", eng.jobs_ok)
    report("completed", count)


def _modules(top, package):
    names = []
    for name in sorted(os.listdir(top)):
        path = top + "/" + name
        if name.endswith(".mpy"):
            module = name[:-4]
            names.append(package if module == "__init__" else package + "." + module)
        elif os.stat(path)[0] & 0x4000:
            names.extend(_modules(path, package + "." + name))
    return names


def imports():
    lib = os.getenv("MPTEST_MPY").split(":")[0]
    names = _modules(lib + "/jobs", "jobs")
    gc.collect()
    before = gc.mem_alloc()
    failed = []
    for name in names:
        try:
            __import__(name)
        except ImportError as error:  # a module needing hardware this port lacks
            failed.append(name + ": " + str(error))
    gc.collect()
    report("import_bytes", gc.mem_alloc() - before)
    report("modules", len(names) - len(failed))
    for line in failed:
        report("import_failed", line.replace(" ", "_"))


STEP = b'{"path":"/app/mod.py","url":"https://example.com/f?X-Amz-Signature=0123456789abcdef","size":1234},'


def stream(size):
    from enginerig import Rig

    rig = Rig()
    client = rig.client
    parts = [
        b'{"timestamp":1700000001,"execution":{"jobId":"big","status":"QUEUED",',
        b'"versionNumber":1,"executionNumber":1,"jobDocument":{"operation":"ota.files","files":[',
    ]
    n = sum(len(p) for p in parts)
    while n < size - 64:
        parts.append(STEP)
        n += len(STEP)
    parts.append(b'{"path":"/last","size":1}]}}}')
    payload = b"".join(parts)
    del parts
    view = memoryview(payload)
    chunk = len(rig.link.buf)
    chunks = [view[i : i + chunk] for i in range(0, len(payload), chunk)]  # made before measuring
    topic = memoryview(b"$aws/things/" + rig.cfg["thing_name"].encode() + b"/jobs/notify-next")
    rig.link.connected = True
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    client.large_begin(topic, len(payload))
    for piece in chunks:
        client.large_feed(piece)
    client.large_end()
    allocated = gc.mem_alloc() - before
    gc.enable()
    report("stream_bytes", len(payload))
    report("stream_chunks", len(chunks))
    report("stream_allocated", allocated)
    report("stream_head", client.head)


mode = sys.argv[1]
if mode == "cycles":
    cycles(int(sys.argv[2]))
elif mode == "import":
    imports()
elif mode == "stream":
    stream(int(sys.argv[2]))
else:
    raise SystemExit("mode: cycles N | import | stream SIZE")
