# micropython: needs=standin,fileserver
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


def _setup(**extra):
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
    raw.update(extra)
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
        ("badcfg", {"operation": "config.set", "values": {"endpoint": "evil.example"}}, "REJECTED"),
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


def test_a_download_releases_the_mqtt_link_and_the_engine_reconnects_to_report():
    import binascii
    import hashlib

    from mptest import env

    data = b"released\n" * 1000
    with open(env("MPTEST_FILES_DIR") + "/released.txt", "wb") as f:
        f.write(data)
    eng, b, thing = _setup(https_ca=env("MPTEST_FILES_CA"))
    url = "https://localhost:" + env("MPTEST_FILES_PORT") + "/released.txt"
    sha = binascii.hexlify(hashlib.sha256(data).digest()).decode()
    doc = {"operation": "file.download", "url": url, "path": "data/released.txt", "sha256": sha}
    _until(eng, lambda: eng.link.connected)
    connects = eng.link.connects
    aws.create_job(thing + "-dl", doc, thing)
    _until(eng, lambda: eng.jobs_ok == 1)
    assert aws.status(thing, thing + "-dl") == "SUCCEEDED"
    assert aws.details(thing, thing + "-dl") == {"path": "data/released.txt", "size": str(len(data))}
    assert eng.link.connects == connects + 1  # closed for the download, opened again to report
    with open(b.root + "/data/released.txt", "rb") as f:
        assert f.read() == data
    eng.link.disconnect()
