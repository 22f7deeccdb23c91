# micropython: needs=mpy
# micropython: heapsize=160K
# micropython: timeout=120
# micropython: wasm32=skip no live heap inside a test (gc.collect() is deferred); `make bench` measures it
# 1,000 job cycles through the real client and engine against the in-process fake service
# (tests/device/fakejobs.py: MQTT would make 1,000 cycles too slow for the suite). Heap after
# collection at cycle 1,000 must equal cycle 100 within 256 bytes.
import gc
import sys
import time

from mptest import env

sys.path[:0] = env("MPTEST_MPY").split(":")  # .mpy modules, as on a device

from enginerig import Rig  # noqa: E402

CYCLES = 1000
DOCS = (
    {"operation": "test.echo", "value": 1},
    {"operation": "test.steps", "n": 2},
    {"operation": "test.fail"},
    {"operation": "nope"},
)


def test_heap_is_flat_over_1000_job_cycles():
    rig = Rig()
    rig.logs = None
    rig.client.log = rig.engine.log = lambda *a: None
    rig.service.record = False
    eng, svc, link = rig.engine, rig.service, rig.link
    eng.step()  # connect; nothing pending
    marks = {}
    t0 = time.ticks_ms()
    for i in range(1, CYCLES + 1):
        done = eng.jobs_ok + eng.jobs_failed
        notes = svc.create("job-" + str(i), DOCS[i % len(DOCS)])
        link.push(notes)
        for _ in range(50):
            eng.step()
            if eng.jobs_ok + eng.jobs_failed > done:
                break
        assert eng.jobs_ok + eng.jobs_failed == done + 1, ("cycle", i, eng.jobs_ok, eng.jobs_failed)
        if i in (100, CYCLES):
            gc.collect()
            marks[i] = gc.mem_alloc()
    elapsed = time.ticks_diff(time.ticks_ms(), t0)
    print("heap after collection: cycle 100 =", marks[100], "cycle 1000 =", marks[CYCLES])
    print("cycle time:", elapsed * 1000 // CYCLES, "us")
    assert abs(marks[CYCLES] - marks[100]) <= 256, marks
    assert eng.jobs_ok == CYCLES // 2 and eng.jobs_failed == CYCLES // 2
