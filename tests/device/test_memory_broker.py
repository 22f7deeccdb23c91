# micropython: needs=broker,responder,mpy
# micropython: heapsize=160K
# micropython: timeout=90
# Job cycles over real MQTT/TLS: the transport's heap after collection stays flat too.
import gc
import sys
import time

from mptest import env

sys.path[:0] = env("MPTEST_MPY").split(":")  # .mpy modules, as on a device

from brokerrig import build, status, until  # noqa: E402
from jobsctl import responder  # noqa: E402

THING = "engine-2"
CYCLES = 40


def test_heap_is_flat_over_mqtt_job_cycles():
    eng = build(THING)
    eng.log = eng.client.log = lambda *a: None
    until(eng, lambda: eng.link.connected and not eng.want_next)
    marks = {}
    t0 = time.ticks_ms()
    for i in range(1, CYCLES + 1):
        job_id = "m-" + str(i)
        responder(cmd="create", thing=THING, job_id=job_id, doc={"operation": "test.steps", "n": 1})
        until(eng, lambda n=i: eng.jobs_ok == n)
        if i in (10, CYCLES):
            gc.collect()
            marks[i] = gc.mem_alloc()
    elapsed = time.ticks_diff(time.ticks_ms(), t0)
    print("heap after collection over MQTT: cycle 10 =", marks[10], "cycle", CYCLES, "=", marks[CYCLES])
    print("cycle time over MQTT/TLS:", elapsed // CYCLES, "ms")
    assert status(THING, "m-" + str(CYCLES))["status"] == "SUCCEEDED"
    assert abs(marks[CYCLES] - marks[10]) <= 256, marks
    eng.link.disconnect()
