# brokerrig: an Engine built by jobs.engine.build() against the test broker and responder.
import random

import opsfallback

ops = opsfallback.load()

import testops  # noqa: E402  (registers the test operations)
from jobs import config  # noqa: E402
from jobs import engine as E  # noqa: E402
from jobsctl import broker_port, responder  # noqa: E402
from mptest import env  # noqa: E402


class Board:
    name = "test"
    root = "/"

    def reset(self, reason):
        raise testops.Reset(reason)

    def connect_network(self, timeout_ms):
        pass


# a journal of its own per run: concurrent runs (other worktrees, CI jobs) must not share one
_RUN = str(random.getrandbits(30))


def build(thing, port=None, **overrides):
    pki = env("MPTEST_PKI")
    raw = {
        "endpoint": "localhost",
        "port": port or broker_port(),
        "thing_name": thing,
        "ca": pki + "/ca.cert.der",
        "cert": pki + "/" + thing + ".cert.der",
        "key": pki + "/" + thing + ".key.der",
        "journal": "/tmp/mptest-broker-journal-" + thing + "-" + _RUN + ".json",
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
    responder(cmd="reset", thing=thing)
    return eng


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
