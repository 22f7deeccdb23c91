# micropython: needs=standin,mpy
# micropython: heapsize=160K
# micropython: timeout=90
# Job cycles over real MQTT/TLS against the local AWS IoT stand-in: the transport's heap after
# collection stays flat too.
import gc
import sys
import time

from mptest import env

sys.path[:0] = env("MPTEST_MPY").split(":")  # .mpy modules, as on a device

import standinctl as aws  # noqa: E402
from brokerrig import on_standin, until  # noqa: E402

CYCLES = 40


def test_heap_is_flat_over_mqtt_job_cycles():
    thing, eng = on_standin("heap")
    eng.log = eng.client.log = lambda *a: None
    until(eng, lambda: eng.link.connected and not eng.want_next)
    marks = {}
    t0 = time.ticks_ms()
    for i in range(1, CYCLES + 1):
        aws.create_job(thing + "-m-" + str(i), {"operation": "test.steps", "n": 1}, thing)
        until(eng, lambda n=i: eng.jobs_ok == n)
        if i in (10, CYCLES):
            gc.collect()
            marks[i] = gc.mem_alloc()
    elapsed = time.ticks_diff(time.ticks_ms(), t0)
    print("heap after collection over MQTT: cycle 10 =", marks[10], "cycle", CYCLES, "=", marks[CYCLES])
    print("cycle time over MQTT/TLS:", elapsed // CYCLES, "ms")
    assert aws.status(thing, thing + "-m-" + str(CYCLES)) == "SUCCEEDED"
    assert abs(marks[CYCLES] - marks[10]) <= 256, marks
    eng.link.disconnect()
