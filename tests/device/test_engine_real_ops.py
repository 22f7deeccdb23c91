# micropython: needs=broker,responder
# micropython: timeout=90
# The device path the firmware will take: config.json loaded by jobs.config, the unix board,
# engine.build(), the built-in operations (diag.echo, gpio.write, config.set), MQTT/TLS.
import json
import os

from jobs import config
from jobs import engine as E
from jobsctl import broker_port, responder
from mptest import env

THING = "engine-1"
STATE = "/tmp/mptest-real-ops-" + str(id(object()))


def _status(job_id):
    for e in responder(cmd="state", thing=THING):
        if e["job_id"] == job_id:
            return e
    return None


def _setup():
    import board

    pki = env("MPTEST_PKI")
    try:
        os.mkdir(STATE)
    except OSError:
        pass
    raw = {
        "endpoint": "localhost",
        "port": broker_port(),
        "thing_name": THING,
        "ca": pki + "/ca.cert.der",
        "cert": pki + "/" + THING + ".cert.der",
        "key": pki + "/" + THING + ".key.der",
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
    responder(cmd="reset", thing=THING)
    return eng, b


def _until(eng, cond, steps=400):
    for _ in range(steps):
        if cond():
            return
        eng.step()
    raise AssertionError("not reached")


def test_builtin_operations_through_the_engine():
    eng, b = _setup()
    jobs = (
        ("echo", {"operation": "diag.echo", "message": "hi"}, "SUCCEEDED"),
        ("led", {"operation": "gpio.write", "pin": "LED", "value": 1}, "SUCCEEDED"),
        ("cfg", {"operation": "config.set", "values": {"telemetry_interval_s": 7}}, "SUCCEEDED"),
        ("badcfg", {"operation": "config.set", "values": {"endpoint": "evil.example"}}, "FAILED"),
        ("badpin", {"operation": "gpio.write", "pin": 99, "value": 1}, "REJECTED"),
    )
    for job_id, doc, _ in jobs:
        responder(cmd="create", thing=THING, job_id=job_id, doc=doc)
    _until(eng, lambda: all((_status(j) or {}).get("status") == want for j, _, want in jobs))
    assert b.pin("LED").value() == 1
    assert config.load(STATE + "/config.json")["telemetry_interval_s"] == 7
    assert eng.cfg["telemetry_interval_s"] == 7
    assert "not remotely settable" in _status("badcfg")["details"]["reason"]
    assert _status("echo")["details"].get("heapFree")
    eng.link.disconnect()
