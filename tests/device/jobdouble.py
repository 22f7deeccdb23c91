# jobdouble: the `job` object of docs/contracts.md, minimal, for driving handlers in tests.
"""A stand-in for the engine's job object: records updates, journals to a JSON file.

job = Job(board, {"operation": "gpio.write", ...}, config={}, journal=path)
job.updates      -> [("IN_PROGRESS", details), ...]
job.cancel_after -> number of progress() calls answered True before False (None: never)
job.reset_at     -> n: the n-th checkpoint() resets the board after journaling (a crash test)
job.refuse_must  -> True: progress(details, must=True) is never accepted (returns False)
job.released     -> times release_link() was called (the MQTT link closed for a download)
"""

import json
import os


class Job:
    def __init__(self, board, doc, config=None, journal=None, job_id="job-1"):
        self.id = job_id
        self.execution_number = 1
        self.doc = doc
        self.board = board
        self.config = config or {}
        self.journal = journal
        self.phase = None
        self.data = {}
        self.updates = []
        self.checkpoints = 0
        self.cancel_after = None
        self.reset_at = None
        self.refuse_must = False
        self.released = 0
        if journal:
            saved = _load(journal)
            if saved:
                self.id = saved["id"]
                self.doc = saved["doc"]
                self.phase = saved["phase"]
                self.data = saved["data"] or {}

    def progress(self, details, must=False):
        if must and self.refuse_must:
            return False  # the service rejected the update, or never answered
        if self.cancel_after is not None:
            if self.cancel_after <= 0:
                return False
            self.cancel_after -= 1
        self.updates.append(("IN_PROGRESS", dict(details)))
        return True

    def checkpoint(self, phase, data=None):
        self.phase = phase
        self.data = data or {}
        self.checkpoints += 1
        if self.journal:
            tmp = self.journal + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"id": self.id, "doc": self.doc, "phase": phase, "data": self.data}, f)
            os.rename(tmp, self.journal)
        if self.reset_at is not None and self.checkpoints >= self.reset_at:
            self.board.reset("test: reset at checkpoint " + str(self.checkpoints))

    def release_link(self):
        self.released += 1

    def reboot(self, details):
        self.updates.append(("IN_PROGRESS", dict(details)))
        self.board.reset("job " + self.id)


def _load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
