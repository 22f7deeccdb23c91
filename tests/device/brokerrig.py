# brokerrig: an Engine built by jobs.engine.build() against the local AWS IoT stand-in, or the test
# broker and scripted responder (tests/jobs_responder.py) for what the real service cannot send.

import testops  # noqa: E402  (registers the test operations)
from jobs import config  # noqa: E402
from jobs import engine as E  # noqa: E402
from jobsctl import broker_port, responder  # noqa: E402
from mptest import env  # noqa: E402


class Board:
    name = "test"
    root = "/tmp"

    def reset(self, reason):
        raise testops.Reset(reason)

    def connect_network(self, timeout_ms):
        pass


def build(thing, port=None, files=None, **overrides):
    """The engine for `thing`; with files=(ca, cert, key) on the stand-in, else on the responder."""
    if files is None:
        pki = env("MPTEST_PKI")
        files = (pki + "/ca.cert.der", pki + "/" + thing + ".cert.der", pki + "/" + thing + ".key.der")
        port = port or broker_port()
        responder(cmd="reset", thing=thing)
    raw = {
        "endpoint": "localhost",
        "port": port,
        "thing_name": thing,
        "ca": files[0],
        "cert": files[1],
        "key": files[2],
        "journal": "/tmp/mptest-broker-journal-" + thing + ".json",
        "request_timeout_ms": 3000,
        "retry_base_ms": 20,
        "progress_interval_ms": 0,
        "telemetry_interval_s": 0,
        "reconnect_min_ms": 50,
        "reconnect_max_ms": 400,
        "connect_timeout_ms": 3000,
    }
    raw.update(overrides)
    cfg = config.validate(raw)
    logs = []
    eng = E.build(cfg, Board(), log=lambda *a: logs.append(" ".join(str(x) for x in a)))
    eng.journal.clear()
    eng.logs = logs
    return eng


def on_standin(prefix, port=None, **overrides):
    """A fresh thing on the stand-in and its engine: (thing, engine)."""
    import standinctl  # here, not at the top: heap-limited tests on the responder never load it

    thing = standinctl.new_thing(prefix)
    return thing, build(thing, port or standinctl.port(), standinctl.files(thing), **overrides)


def status(thing, job_id):
    for e in responder(cmd="state", thing=thing):
        if e["job_id"] == job_id:
            return e
    return None


def until(eng, cond, steps=400):
    for _ in range(steps):
        if cond():
            return
        eng.step()
    raise AssertionError("not reached; log: " + repr(eng.logs[-8:]))
