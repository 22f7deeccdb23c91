# micropython: needs=standin,mpy
# micropython: heapsize=160K
# micropython: timeout=300
# Job cycles over real MQTT/TLS against the local AWS IoT stand-in: the transport's heap after
# collection stays flat too. It measures memory, not speed: under a loaded machine a cycle may take
# seconds (the stand-in's service answers late), so every wait is by the clock with room to spare,
# and a stuck cycle fails with the engine's last log lines instead of running into the file timeout.
import gc
import sys
import time

from mptest import env

sys.path[:0] = env("MPTEST_MPY").split(":")  # .mpy modules, as on a device

import standinctl as aws  # noqa: E402
from brokerrig import on_standin  # noqa: E402

CYCLES = 40
_CYCLE_S = 60  # per job; about 0.05 s on an idle machine
_LOG_LINES = 8


class _Ring:
    """The engine's last log lines in a fixed list: the heap stays flat, a failure can say why."""

    def __init__(self, n):
        self.lines = [""] * n
        self.at = 0

    def log(self, *parts):
        self.lines[self.at % len(self.lines)] = " ".join(str(p) for p in parts)
        self.at += 1

    def last(self):
        n = len(self.lines)
        return [self.lines[(self.at + i) % n] for i in range(n) if self.lines[(self.at + i) % n]]


def _wait(eng, cond, ring, what):
    started = time.ticks_ms()
    while not cond():
        if time.ticks_diff(time.ticks_ms(), started) > _CYCLE_S * 1000:
            raise AssertionError(what + " not reached in " + str(_CYCLE_S) + " s; log: " + repr(ring.last()))
        eng.step()


def test_heap_is_flat_over_mqtt_job_cycles():
    # a late answer is waited for, not retried: retries under load would only add work
    thing, eng = on_standin("heap", request_timeout_ms=20000, connect_timeout_ms=20000)
    ring = _Ring(_LOG_LINES)
    eng.log = eng.client.log = ring.log
    _wait(eng, lambda: eng.link.connected and not eng.want_next, ring, "connected")
    marks = {}
    t0 = time.ticks_ms()
    for i in range(1, CYCLES + 1):
        aws.create_job(thing + "-m-" + str(i), {"operation": "test.steps", "n": 1}, thing)
        _wait(eng, lambda n=i: eng.jobs_ok == n, ring, "job " + str(i))
        if i in (10, CYCLES):
            gc.collect()
            marks[i] = gc.mem_alloc()
    elapsed = time.ticks_diff(time.ticks_ms(), t0)
    print("heap after collection over MQTT: cycle 10 =", marks[10], "cycle", CYCLES, "=", marks[CYCLES])
    print("cycle time over MQTT/TLS:", elapsed // CYCLES, "ms")
    assert aws.status(thing, thing + "-m-" + str(CYCLES)) == "SUCCEEDED"
    assert abs(marks[CYCLES] - marks[10]) <= 256, marks
    eng.link.disconnect()
