# micropython: needs=broker,responder,mpy
# micropython: heapsize=160K
# micropython: timeout=90
# A 128 KiB job document over real MQTT/TLS, on a heap too small for json.loads of it: the
# device streams it through the scanner, answers REJECTED with the size, and keeps working.
import gc
import json
import sys

from mptest import env

sys.path[:0] = env("MPTEST_MPY").split(":")  # .mpy modules, as on a device

from brokerrig import build, status, until  # noqa: E402
from jobsctl import responder  # noqa: E402

THING = "engine-2"
PAD = 128 * 1024


def test_128k_document_is_answered_rejected_and_the_device_keeps_working():
    eng = build(THING)
    until(eng, lambda: eng.link.connected and not eng.want_next)
    responder(cmd="create", thing=THING, job_id="huge", doc=None, pad=PAD)
    until(eng, lambda: status(THING, "huge")["status"] == "REJECTED")
    reason = status(THING, "huge")["details"]["reason"]
    assert reason.startswith("document too large (1") and reason.endswith(" > 8192)"), reason
    size = int(reason[len("document too large (") : reason.index(" >")])
    assert size > PAD, size
    responder(cmd="create", thing=THING, job_id="small", doc={"operation": "test.echo", "value": 1})
    until(eng, lambda: status(THING, "small")["status"] == "SUCCEEDED")
    assert eng.jobs_ok == 1 and eng.jobs_failed == 1
    eng.link.disconnect()
    assert not _json_loads_fits(), "heap is large enough for json.loads of the payload"


def _json_loads_fits():
    """What a naive client would do with the payload: hold it and json.loads it."""
    gc.collect()
    try:
        raw = bytearray(PAD + 10)
        raw[:8] = b'{"pad":"'
        for i in range(8, PAD + 8):
            raw[i] = 120
        raw[PAD + 8 :] = b'"}'
        json.loads(raw)
        return True
    except MemoryError:
        return False
