# jobs.job: the execution being worked on, and every update sent for it. MIT licence.
"""What an operation's handler gets (`job`), and the one set of rules for sending an update.

    job.progress({"step": "downloading"})     # rate-limited IN_PROGRESS; False: canceled
    job.progress(details, must=True)          # now; True only on update/accepted
    job.checkpoint(phase, data)               # journaled, to resume after a reset
    job.reboot(details)                       # journal, IN_PROGRESS accepted, reset
    job.release_link()                        # one TLS session at a time (HTTPS download)
    link, client = job.mqtt()                 # the link, connected, for an op that talks over it

`send(status, details)` is how every update of this execution goes out (progress, reboot,
final): a VersionMismatch is reconciled once (describe, adopt the service's version, send
again); statusDetails the service refuses (InvalidRequest / InvalidJson) are replaced once by
a minimal reason that is certainly valid, so a refused update never blocks the job; an
execution the service says is over (terminal, gone) marks the job `canceled`.
"""

import time

from jobs import client as C
from jobs import ops

TERMINAL = C.TERMINAL
_OURS = C.Answer(C.ACCEPTED)  # a resent final update the service had already applied


def refused_details(code):
    """The statusDetails sent instead of ones the service refused."""
    return {"reason": "statusDetails refused by the service: " + str(code)[:64]}


class Job:
    """One execution. `engine` gives client, link, cfg, journal, board, log, feed(), connect()."""

    def __init__(self, engine, ex, doc=None, op_name="", phase=None, data=None):
        self._engine = engine
        self.id = ex.job_id
        self.execution_number = ex.execution_number
        self.version = ex.version
        self.doc = doc
        self.board = engine.board
        self.config = engine.cfg
        self.op = op_name
        self.phase = phase
        self.data = data if data is not None else {}
        self.canceled = False
        self.journaled = False  # a journal entry exists for it
        self._last_progress = None
        self.started = time.ticks_ms()

    # -- for handlers ---------------------------------------------------------------------

    def progress(self, details=None, must=False):
        """Report IN_PROGRESS (rate-limited; re-arms the step timer). False: the job was
        canceled; clean up and raise ops.Canceled. must=True: send now (reconnecting if need
        be) and return True only when the service answered update/accepted."""
        if self.canceled:
            return False
        eng = self._engine
        eng.feed()
        link = eng.link
        if must:
            if not link.connected:
                eng.connect()
            return self._progress(details) == C.ACCEPTED
        if not link.connected:
            return True  # released or lost: reported again once the engine reconnects
        try:
            for _ in range(16):  # notify-next that arrived meanwhile
                if not link.wait(0):
                    break
        except OSError as e:
            eng.log("engine: link lost during job", self.id, "(" + str(e) + ")")
            link.close()
            return True
        c = eng.client
        if c.head_changed:
            c.head_changed = False
            if c.head != (self.id, self.execution_number) and self._over():
                self.canceled = True
                return False
        last = self._last_progress
        if last is not None and time.ticks_diff(time.ticks_ms(), last) < eng.cfg["progress_interval_ms"]:
            return True
        self._progress(details)
        return not self.canceled

    def _over(self):
        """notify-next shows another head (or none): canceled, or a notification that MQTT
        delivered late (AWS keeps no order), older than this claim? The service is asked."""
        eng = self._engine
        try:
            a = eng.client.describe(self.id, self.execution_number, include_document=False)
        except OSError as e:
            eng.log("engine: link lost during job", self.id, "(" + str(e) + ")")
            eng.link.close()
            return False  # the next report (or the final update) tells
        if a.result == C.ACCEPTED:
            return a.execution is None or a.execution.status in TERMINAL
        return a.kind == C.GONE or a.kind == C.MISSING

    def checkpoint(self, phase, data=None):
        """Journal `phase` (and `data`) atomically, to resume from after a reset."""
        self.phase = phase
        if data is not None:
            self.data = data
        self.save()

    def reboot(self, details=None):
        """Journal, report IN_PROGRESS (accepted), then reset the board: never returns."""
        if self.phase in (None, "running"):
            self.phase = "reboot"
        self.save()
        if not self.progress(details, must=True):
            if self.canceled:
                raise ops.Canceled()
            raise ops.Failed("could not report IN_PROGRESS before the reboot")
        self._engine.before_reset()
        self.board.reset("job " + self.id)

    def release_link(self):
        """Close the MQTT connection now (one TLS session at a time, e.g. before an HTTPS
        download); progress(must=True) and the engine reconnect when needed."""
        self._engine.link.disconnect()

    def mqtt(self):
        """(link, client) for an operation that talks over the MQTT connection itself (the
        stream download of afr_ota): the link connected, after a reconnect with backoff when it
        was lost or released (the Jobs topics subscribed again), and the Jobs client."""
        eng = self._engine
        if not eng.link.connected:
            eng.connect()
        return eng.link, eng.client

    # -- for the engine -------------------------------------------------------------------

    def save(self, status=None, details=None):
        """Journal this execution: its phase, or (status given) the final update to send."""
        entry = {"job_id": self.id, "execution_number": self.execution_number, "phase": self.phase or "running"}
        if self.op:
            entry["op"] = self.op
        if self.data:
            entry["data"] = self.data
        if status is not None:
            entry["phase"] = "done"
            entry["status"] = status
            entry["details"] = details
        self._engine.journal.write(entry)
        self.journaled = True

    def _progress(self, details):
        self._last_progress = time.ticks_ms()
        eng = self._engine
        try:
            return self.send("IN_PROGRESS", details, eng.cfg["step_timeout_min"]).result
        except OSError as e:
            eng.log("engine: link lost during job", self.id, "(" + str(e) + ")")
            eng.link.close()
            return C.TIMEOUT

    def send(self, status, details, step_timeout=0):
        """Send an update of this execution under the rules above; the Answer."""
        c = self._engine.client
        a = c.update(self.id, status, details, self.version, self.execution_number, step_timeout=step_timeout)
        if a.kind == C.STALE:
            d = c.describe(self.id, self.execution_number, include_document=False)
            ex = d.execution
            if d.result == C.TIMEOUT:
                return d
            if d.result == C.ACCEPTED and ex is not None and ex.status not in TERMINAL:
                self.version = ex.version
                a = c.update(self.id, status, details, self.version, self.execution_number, step_timeout=step_timeout)
            elif ex is not None and ex.status == status:
                return _OURS  # our own update, whose answer was lost, already ended it
            else:
                self.canceled = True
                return a
        if a.kind == C.REFUSED and details:
            self._engine.log("engine: job", self.id, status, "update refused (" + str(a.code) + "); minimal details")
            a = c.update(
                self.id, status, refused_details(a.code), self.version, self.execution_number, step_timeout=step_timeout
            )
        if a.result == C.ACCEPTED:
            self.version = a.state_version or self.version + 1
        elif a.kind == C.GONE and a.state_status == status and status in TERMINAL:
            return _OURS
        elif a.kind == C.GONE or a.kind == C.MISSING:
            self.canceled = True
        return a
