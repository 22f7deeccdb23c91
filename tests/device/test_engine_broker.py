# micropython: needs=broker,linkproxy,responder
# micropython: timeout=90
# The engine over real MQTT + mutual TLS (mosquitto) against the scripted Jobs responder.
from brokerrig import build, status, until
from jobsctl import proxy, proxy_port, responder

THING = "engine-2"


def _state(job_id):
    return status(THING, job_id)


def test_job_created_while_idle_runs_to_succeeded_over_mqtt():
    eng = build(THING, telemetry_interval_s=1)
    until(eng, lambda: eng.link.connected and not eng.want_next)  # connected, queue empty
    responder(cmd="create", thing=THING, job_id="mq-1", doc={"operation": "test.echo", "value": 9})
    until(eng, lambda: _state("mq-1")["status"] == "SUCCEEDED")
    e = _state("mq-1")
    assert e["details"] == {"echo": "9"}, e
    assert e["version"] == 3, e  # QUEUED 1 -> start-next 2 -> SUCCEEDED 3
    log = responder(cmd="log", thing=THING)
    assert [x["op"] for x in log if x.get("job_id") in (None, "mq-1")][-2:] == ["start-next", "update"]
    eng.link.disconnect()


def test_progress_and_invalid_document_over_mqtt():
    eng = build(THING)
    responder(cmd="create", thing=THING, job_id="steps", doc={"operation": "test.steps", "n": 3})
    responder(cmd="create", thing=THING, job_id="nope", doc={"operation": "nope"})
    until(eng, lambda: (_state("nope") or {}).get("status") == "REJECTED")
    assert _state("steps")["status"] == "SUCCEEDED"
    assert _state("steps")["version"] == 6  # 1 + start-next + 3 progress + final
    assert "unsupported operation" in _state("nope")["details"]["reason"]
    eng.link.disconnect()


def test_cancel_over_mqtt_stops_the_running_handler():
    eng = build(THING)
    calls = [0]
    orig = eng._progress

    def progress(job, details):
        calls[0] += 1
        if calls[0] == 2:
            responder(cmd="cancel", thing=THING, job_id="cx")  # publishes notify-next (empty)
            eng.client.pump(300)  # give the notification time to arrive
        return orig(job, details)

    eng._progress = progress
    responder(cmd="create", thing=THING, job_id="cx", doc={"operation": "test.steps", "n": 50})
    until(eng, lambda: eng.canceled == 1)
    updates = [x for x in responder(cmd="log", thing=THING) if x["op"] == "update"]
    assert [u["status"] for u in updates] == ["IN_PROGRESS"], updates
    assert _state("cx")["status"] == "CANCELED"
    eng.link.disconnect()


def test_link_cut_then_job_queued_silently_is_found_after_reconnect():
    eng = build(THING, port=proxy_port(), keepalive=2)
    until(eng, lambda: eng.link.connected and not eng.want_next)
    proxy("drop")
    # queued with no notification: only the re-query after reconnect can find it
    responder(cmd="create", thing=THING, job_id="quiet", doc={"operation": "test.echo"}, notify=False)
    until(eng, lambda: _state("quiet")["status"] == "SUCCEEDED", steps=2000)
    assert eng.link.connects >= 2
    eng.link.disconnect()


def test_telemetry_is_published_to_logi2():
    eng = build(THING, telemetry_interval_s=1)
    until(eng, lambda: eng.link.connected)
    msg = eng.telemetry.message(eng.stats())
    assert msg.startswith(b'{"uptime":') and b'"jobs_ok":' in msg and len(msg) < 400, msg
    import json
    import time

    t0 = time.ticks_ms()
    while not responder(cmd="telemetry", thing=THING) and time.ticks_diff(time.ticks_ms(), t0) < 5000:
        eng.step()
    got = responder(cmd="telemetry", thing=THING)
    assert got, "no telemetry reached the broker"
    sample = json.loads(got[-1])
    for key in ("uptime", "heap_free", "job", "fw", "app", "jobs_ok", "jobs_failed", "reconnects", "ignored"):
        assert key in sample, (key, sample)
    eng.link.disconnect()


def test_silent_service_never_hangs_the_loop():
    import time

    eng = build(THING, request_timeout_ms=500)
    until(eng, lambda: eng.link.connected and not eng.want_next)
    responder(cmd="silence", thing=THING, on=True)
    try:
        responder(cmd="create", thing=THING, job_id="hush", doc={"operation": "test.echo"})
        for _ in range(3):
            t0 = time.ticks_ms()
            eng.step()
            assert time.ticks_diff(time.ticks_ms(), t0) < 2500
    finally:
        responder(cmd="silence", thing=THING, on=False)
    until(eng, lambda: status(THING, "hush")["status"] == "SUCCEEDED")
    eng.link.disconnect()
