# micropython: needs=standin,standinproxy,broker,responder
# micropython: timeout=90
# The engine over real MQTT + mutual TLS against the local AWS IoT stand-in (tools/standin): jobs
# created through its control plane, faults from its settings. Each test has a thing of its own.
import time

import standinctl as aws
from brokerrig import build, on_standin, until
from jobs import client as C
from jobs import job as J
from jobsctl import proxy, responder


def _wrap_progress(fn):
    """Job.progress wrapped by fn(job, details, must, original) until the returned undo()."""
    orig = J.Job.progress

    def progress(job, details=None, must=False):
        return fn(job, details, must, orig)

    J.Job.progress = progress

    def undo():
        J.Job.progress = orig

    return undo


def _status(thing, job_id):
    return aws.status(thing, job_id)


def test_job_created_while_idle_runs_to_succeeded_over_mqtt():
    thing, eng = on_standin("idle")
    until(eng, lambda: eng.link.connected and not eng.want_next)  # connected, queue empty
    aws.create_job(thing + "-mq", {"operation": "test.echo", "value": 9}, thing)
    until(eng, lambda: _status(thing, thing + "-mq") == "SUCCEEDED")
    e = aws.execution(thing, thing + "-mq")
    assert e["statusDetails"]["detailsMap"] == {"echo": "9"}, e
    assert e["versionNumber"] == 3, e  # QUEUED 1 -> start-next 2 -> SUCCEEDED 3
    assert eng.jobs_ok == 1
    eng.link.disconnect()


def test_progress_and_invalid_document_over_mqtt():
    thing, eng = on_standin("prog")
    aws.create_job(thing + "-steps", {"operation": "test.steps", "n": 3}, thing)
    aws.create_job(thing + "-nope", {"operation": "nope"}, thing)
    until(eng, lambda: _status(thing, thing + "-nope") == "REJECTED")
    steps = aws.execution(thing, thing + "-steps")
    assert steps["status"] == "SUCCEEDED"
    assert steps["versionNumber"] == 6  # 1 + start-next + 3 progress + final
    assert "unsupported operation" in aws.details(thing, thing + "-nope")["reason"]
    eng.link.disconnect()


def test_cancel_over_mqtt_stops_the_running_handler():
    thing, eng = on_standin("cancel")
    job_id = thing + "-cx"
    calls = [0]
    sent = []
    orig_update = eng.client.update

    def progress(job, details, must, orig):
        calls[0] += 1
        if calls[0] == 2:
            aws.cancel_job(job_id, force=True)  # the service notifies: notify-next without it
        return orig(job, details, must)

    def update(job, status, *args, **kwargs):
        sent.append(status)
        return orig_update(job, status, *args, **kwargs)

    eng.client.update = update
    undo = _wrap_progress(progress)
    try:
        aws.create_job(job_id, {"operation": "test.steps", "n": 50}, thing)
        until(eng, lambda: eng.canceled == 1, steps=2000)
    finally:
        undo()
    assert sent[0] == "IN_PROGRESS" and "SUCCEEDED" not in sent and "FAILED" not in sent, sent
    assert len(sent) < 50, sent  # stopped early, not run to the end
    assert _status(thing, job_id) == "CANCELED"
    eng.link.disconnect()


def test_concurrent_update_version_mismatch_is_reconciled():
    thing, eng = on_standin("race")
    job_id = thing + "-vm"
    calls = [0]
    codes = []
    orig_update = eng.client.update

    def progress(job, details, must, orig):
        calls[0] += 1
        if calls[0] == 2:  # someone else updates the execution: its version moves on
            aws.data_plane_update(thing, job_id, "IN_PROGRESS", {"operator": "peek"})
        return orig(job, details, must)

    def update(*args, **kwargs):
        a = orig_update(*args, **kwargs)
        codes.append(a.code if a.result == C.REJECTED else a.result)
        return a

    eng.client.update = update
    undo = _wrap_progress(progress)
    try:
        aws.create_job(job_id, {"operation": "test.steps", "n": 3}, thing)
        until(eng, lambda: eng.jobs_ok == 1)
    finally:
        undo()
    assert "VersionMismatch" in codes, codes
    e = aws.execution(thing, job_id)
    assert e["status"] == "SUCCEEDED", e
    # 1 queued, 2 start-next, 3 progress, 4 the other writer, 5 that progress resent at the
    # adopted version, 6 progress, 7 final
    assert e["versionNumber"] == 7, e
    eng.link.disconnect()


def test_link_cut_then_job_queued_is_found_after_reconnect():
    thing, eng = on_standin("cut", port=int(aws.env("MPTEST_STANDIN_PROXY_PORT")), keepalive=2)
    until(eng, lambda: eng.link.connected and not eng.want_next)
    control = "MPTEST_STANDIN_PROXY_CONTROL"
    proxy("refuse", control)
    proxy("drop", control)
    try:
        # the notification goes out while the device is away: only the re-query after reconnect finds it
        aws.create_job(thing + "-quiet", {"operation": "test.echo"}, thing)
    finally:
        proxy("accept", control)
    until(eng, lambda: _status(thing, thing + "-quiet") == "SUCCEEDED", steps=2000)
    assert eng.link.connects >= 2
    eng.link.disconnect()


def test_telemetry_is_published_to_logi2():
    # Scripted responder: telemetry is not part of Jobs, the stand-in does not collect it; the
    # responder records what reaches logi2/device/<thing>.
    thing = "engine-2"
    eng = build(thing, telemetry_interval_s=1)
    until(eng, lambda: eng.link.connected)
    msg = eng.telemetry.message(eng.stats())
    assert msg.startswith(b'{"uptime":') and b'"jobs_ok":' in msg and len(msg) < 400, msg
    import json

    t0 = time.ticks_ms()
    while not responder(cmd="telemetry", thing=thing) and time.ticks_diff(time.ticks_ms(), t0) < 5000:
        eng.step()
    got = responder(cmd="telemetry", thing=thing)
    assert got, "no telemetry reached the broker"
    sample = json.loads(got[-1])
    keys = (
        "uptime",
        "heap_free",
        "job",
        "fw",
        "app",
        "jobs_ok",
        "jobs_failed",
        "given_up",
        "reconnects",
        "ignored",
    )
    for key in keys:
        assert key in sample, (key, sample)
    eng.link.disconnect()


def test_slow_service_never_hangs_the_loop():
    # every answer comes 0.8 s late, after the 0.5 s request timeout: each step gives up in time
    thing, eng = on_standin("slow", request_timeout_ms=500)
    until(eng, lambda: eng.link.connected and not eng.want_next)
    aws.settings(response_delay=0.8)
    try:
        aws.create_job(thing + "-hush", {"operation": "test.echo"}, thing)
        for _ in range(3):
            t0 = time.ticks_ms()
            eng.step()
            assert time.ticks_diff(time.ticks_ms(), t0) < 2500
    finally:
        aws.no_faults()
    until(eng, lambda: _status(thing, thing + "-hush") == "SUCCEEDED", steps=2000)
    eng.link.disconnect()


def test_duplicate_answers_and_notifications_run_the_job_once():
    thing, eng = on_standin("dup")
    until(eng, lambda: eng.link.connected and not eng.want_next)
    aws.settings(duplicate_responses=True)
    try:
        aws.create_job(thing + "-twice", {"operation": "test.steps", "n": 2}, thing)
        until(eng, lambda: _status(thing, thing + "-twice") == "SUCCEEDED")
        # the second copy of each answer (start-next, 2 progress updates, the final update)
        # finds its token already spent: dropped and counted
        until(eng, lambda: eng.client.ignored >= 4)
    finally:
        aws.no_faults()
    assert eng.jobs_ok == 1 and eng.jobs_failed == 0
    assert aws.execution(thing, thing + "-twice")["versionNumber"] == 5  # 1 + start-next + 2 + final
    eng.link.disconnect()


def test_throttled_and_internal_errors_are_retried_to_success():
    thing, eng = on_standin("flaky", retries=4)
    until(eng, lambda: eng.link.connected and not eng.want_next)
    aws.settings(throttle_every=3)
    try:
        for n in ("a", "b"):
            aws.create_job(thing + "-" + n, {"operation": "test.steps", "n": 2}, thing)
        until(eng, lambda: eng.jobs_ok == 2, steps=2000)
    finally:
        aws.no_faults()
    assert _status(thing, thing + "-a") == _status(thing, thing + "-b") == "SUCCEEDED"
    assert eng.jobs_failed == 0
    eng.link.disconnect()
