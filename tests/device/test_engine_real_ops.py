# micropython: needs=standin
# micropython: timeout=90
# The device path the firmware will take: config.json loaded by jobs.config, the unix board,
# engine.build(), the built-in operations (diag.echo, gpio.write, config.set), MQTT/TLS, against
# the local AWS IoT stand-in.
import json
import os

import standinctl as aws
from jobs import config
from jobs import engine as E

STATE = "/tmp/mptest-real-ops-" + str(id(object()))


def _setup():
    import board

    thing = aws.new_thing("realops")
    ca, cert, key = aws.files(thing)
    try:
        os.mkdir(STATE)
    except OSError:
        pass
    raw = {
        "endpoint": "localhost",
        "port": aws.port(),
        "thing_name": thing,
        "ca": ca,
        "cert": cert,
        "key": key,
        "board": "unix",
        "board_state_dir": STATE,
        "request_timeout_ms": 3000,
        "progress_interval_ms": 0,
        "telemetry_interval_s": 0,
    }
    with open(STATE + "/config.json", "w") as f:
        f.write(json.dumps(raw))
    cfg = config.load(STATE + "/config.json")
    b = board.Board(cfg)
    logs = []
    eng = E.build(cfg, b, log=lambda *a: logs.append(a))
    eng.journal.clear()
    return eng, b, thing


def _until(eng, cond, steps=400):
    for _ in range(steps):
        if cond():
            return
        eng.step()
    raise AssertionError("not reached")


def test_builtin_operations_through_the_engine():
    eng, b, thing = _setup()
    jobs = (
        ("echo", {"operation": "diag.echo", "message": "hi"}, "SUCCEEDED"),
        ("led", {"operation": "gpio.write", "pin": "LED", "value": 1}, "SUCCEEDED"),
        ("cfg", {"operation": "config.set", "values": {"telemetry_interval_s": 7}}, "SUCCEEDED"),
        ("badcfg", {"operation": "config.set", "values": {"endpoint": "evil.example"}}, "FAILED"),
        ("badpin", {"operation": "gpio.write", "pin": 99, "value": 1}, "REJECTED"),
    )
    for job_id, doc, _ in jobs:
        aws.create_job(thing + "-" + job_id, doc, thing)
    _until(eng, lambda: eng.jobs_ok + eng.jobs_failed == len(jobs))
    for job_id, _, want in jobs:
        assert aws.status(thing, thing + "-" + job_id) == want, job_id
    assert b.pin("LED").value() == 1
    assert config.load(STATE + "/config.json")["telemetry_interval_s"] == 7
    assert eng.cfg["telemetry_interval_s"] == 7
    assert "not remotely settable" in aws.details(thing, thing + "-badcfg")["reason"]
    assert aws.details(thing, thing + "-echo").get("heapFree")
    eng.link.disconnect()
