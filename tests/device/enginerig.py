# enginerig: builds an Engine on the in-process fake service, with tiny test operations.
"""Test operations (real Op subclasses per the contract) and an engine wired to FakeLink."""

import random

from fakejobs import FakeLink, FakeService
from jobs import client as C  # noqa: E402
from jobs import (  # noqa: E402
    config,
    store,
    token,
    topics,
)
from jobs import engine as E  # noqa: E402
from jobs.scan import Scanner  # noqa: E402

THING = "engine-1"


from testops import HOOK, RUNS, Board, Reset  # noqa: E402,F401

# the Unix port's os has no getpid: a random name keeps concurrent runs (other checkouts) apart
_JOURNAL = "/tmp/mptest-engine-journal-" + str(random.getrandbits(30)) + ".json"


def settings(**overrides):
    raw = {
        "endpoint": "localhost",
        "thing_name": THING,
        "request_timeout_ms": 300,
        "retry_base_ms": 10,
        "retries": 3,
        "progress_interval_ms": 0,
        "telemetry_interval_s": 0,
        "journal": _JOURNAL,
    }
    raw.update(overrides)
    return config.validate(raw)


class Rig:
    def __init__(self, service=None, fresh_journal=True, **overrides):
        self.cfg = settings(**overrides)
        self.service = service or FakeService(THING)
        self.link = FakeLink(self.service, self.cfg["buffer_size"])
        self.logs = []
        log = self.logs.append if False else (lambda *a: self.logs.append(" ".join(str(x) for x in a)))
        self.client = C.Client(
            self.link, topics.Topics(THING), token.Tokens("abcd1234"), Scanner(), self.cfg, log
        )
        self.journal = store.Journal(self.cfg["journal"])
        if fresh_journal:
            self.journal.clear()
        self.board = Board()
        self.engine = E.Engine(self.cfg, self.board, self.link, self.client, self.journal, None, log)

    def create(self, job_id, doc, deliver=True):
        notes = self.service.create(job_id, doc)
        if deliver and self.link.connected:
            self.link.push(notes)

    def until(self, cond, steps=300):
        for _ in range(steps):
            if cond():
                return
            self.engine.step()
        raise AssertionError("not reached in " + str(steps) + " steps; log: " + repr(self.logs[-8:]))

    def settle(self, steps=20):
        for _ in range(steps):
            self.engine.step()

    def updates(self, job_id):
        return [u for u in self.service.updates if u[0] == job_id]
