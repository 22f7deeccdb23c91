# jobs.engine: the loop, the claim and the recovery, one job at a time. MIT licence.
"""The Jobs engine: on boot, after a reconnect and on notify-next it asks start-next for work,
checks the document (ops.prepare), runs the operation with a `jobs.job.Job`, and reports
SUCCEEDED / FAILED / REJECTED. A journal (jobs.store.Journal) records what must survive a
reset, so a reset is recovered, never silently dropped or re-run.

    eng = engine.build(cfg, board)      # the wired engine (TLS link, client, journal)
    eng.run_forever()

What is journaled, and why (see docs/engine.md): start-next already makes the service hold
"claimed" (the execution is IN_PROGRESS and comes back from start-next after a reset), so a
claim is never journaled. An idempotent operation (running it twice has the effect of running
it once: gpio.write, diag.echo, ...) is not journaled at all: after a reset it simply runs
again. Any other operation is journaled `running` before its handler starts (after a reset it
resumes, or ends FAILED "interrupted by reset, not re-run") and `done` with its final update
(after a reset that update is sent, the handler not run again).
"""

import sys
import time

from jobs import clock, ops
from jobs import client as C
from jobs.job import TERMINAL, Job
from jobs.mqtt import LinkDown

INTERRUPTED = "interrupted by reset, not re-run"
_SKIP_CAP = 4  # executions given up on, remembered so the queue moves on past them


def _reason(error):
    if isinstance(error, ops.Failed):
        return str(error.args[0]) if error.args else "failed"
    text = str(error)
    name = error.__class__.__name__
    return name + ": " + text if text else name


class Engine:
    def __init__(self, cfg, board, link, client, journal, telemetry=None, log=print, wdt=None):
        self.cfg = cfg
        self.board = board
        self.link = link
        self.client = client
        self.journal = journal
        self.telemetry = telemetry
        self.log = log
        self.wdt = wdt
        client.feed = self.feed
        self.job = None  # the Job running now
        self.want_next = True
        self.want_recover = True
        self.pending = None  # (job, status, details): a final update not accepted yet, unjournaled
        self.finished = None  # (job_id, execution_number) last finished or dropped
        self.skip = []  # (job_id, execution_number) given up on: their final update was refused
        self.retry_at = None  # ticks when a paused claim/report may be tried again
        self.jobs_ok = 0
        self.jobs_failed = 0
        self.given_up = 0
        self.canceled = 0
        self.duplicates = 0
        self.steps = 0

    # -- the loop ---------------------------------------------------------------------------

    def run_forever(self):
        while True:
            self.step()

    def step(self):
        """One turn of the loop: connect, report, recover, claim+run, or wait for traffic."""
        self.steps += 1
        self.feed()
        try:
            if not self.link.connected:
                self.connect()
            self._telemetry()
            if self.retry_at is not None:
                if time.ticks_diff(time.ticks_ms(), self.retry_at) < 0:
                    self._idle(200)
                    return
                self.retry_at = None
            if self.want_recover:
                self._recover()
            elif self.want_next:
                self._claim()
            else:
                self._idle(1000)
        except Exception as e:  # a lost link or a bug: never the end of the loop
            self.log("engine:", _reason(e))
            if not isinstance(e, OSError):
                sys.print_exception(e)
                self._pause()  # what is not a link failure must not spin the loop
            self.link.close()
            self.want_next = True
            self.want_recover = True

    def stats(self):
        return {
            "job": self.job.id if self.job else None,
            "jobs_ok": self.jobs_ok,
            "jobs_failed": self.jobs_failed,
            "given_up": self.given_up,
            "reconnects": max(0, self.link.connects - 1),
            "ignored": self.client.ignored,
        }

    def feed(self):
        """Feed the watchdog (and keep the uptime count right past the tick wrap)."""
        clock.uptime_s()
        if self.wdt is not None:
            self.wdt.feed()

    def _sleep(self, ms):
        clock.sleep(ms, self.feed)

    def connect(self):
        """Open the link (backoff between tries), then ask again: a lost notification never
        loses a job."""
        cfg = self.cfg
        self.link.reconnect(
            self.client.topics.subscriptions(), cfg["reconnect_min_ms"], cfg["reconnect_max_ms"], idle=self._sleep
        )
        self.log("engine: connected (" + str(self.link.connects) + ")")
        self.want_next = True
        self.want_recover = True

    def before_reset(self):
        """Called before an intentional reset: what should survive it is saved."""
        if self.telemetry is not None:
            self.telemetry.save(self.stats())

    def _telemetry(self):
        interval = self.cfg["telemetry_interval_s"]  # config.set may have changed it
        t = self.telemetry
        if t is None:
            if not interval:
                return
            from jobs.telemetry import Telemetry

            t = self.telemetry = Telemetry(self.cfg, self.board)
        t.interval_s = interval
        if t.due():
            t.send(self.link, self.stats())

    def _idle(self, ms):
        if self.telemetry is not None:
            ms = min(ms, max(1, self.telemetry.ms_until_due()))
        self.link.wait(ms)
        c = self.client
        if not c.head_changed:
            return
        c.head_changed = False
        if c.head is None:
            return
        if c.head == self.finished or c.head in self.skip:
            self.duplicates += 1  # a late notification of what we already finished
            return
        self.want_next = True

    def _pause(self):
        ms = self.cfg["retry_base_ms"] << self.cfg["retries"]
        self.retry_at = time.ticks_add(time.ticks_ms(), ms)

    # -- claiming and running ---------------------------------------------------------------

    def _claim(self):
        self.want_next = False
        c = self.client
        if self.skip:
            return self._claim_listed()
        c.want_heads = False  # what start-next answers, notify-next need not say
        try:
            ex = self._start_next()
        finally:
            c.want_heads = True
        if ex is not None:
            c.head_changed = False  # a notify-next meanwhile named this one, or is older
            self._run(ex)

    def _start_next(self):
        """The execution start-next hands out to run now, or None."""
        c = self.client
        if self.cfg["query_next_first"]:
            a = c.describe("$next", include_document=False)
            if a.result == C.TIMEOUT:
                raise LinkDown("describe $next: no answer")
            if a.result == C.ACCEPTED and a.execution is None:
                return None
        a = c.start_next(step_timeout=self.cfg["step_timeout_min"])
        if a.result == C.TIMEOUT:
            raise LinkDown("start-next: no answer")
        if a.result == C.REJECTED:
            self.want_next = True
            self._pause()
            return None
        ex = a.execution
        if ex is None:
            return None  # nothing pending: wait for notify-next
        key = (ex.job_id, ex.execution_number)
        if key in self.skip:
            self.want_next = True  # past it through the pending list, at the next turn
            return None
        if key == self.finished:
            self.duplicates += 1  # handed out again after we dropped it: never re-run
            return None
        return ex

    def _claim_listed(self):
        """Past an execution given up on (start-next hands it out first): the pending list,
        and the first execution not given up on, claimed with an IN_PROGRESS update."""
        c = self.client
        a = c.get_pending()
        if a.result == C.TIMEOUT:
            raise LinkDown("get: no answer")
        if a.result != C.ACCEPTED or a.pending is None:
            self._pause()
            self.want_next = True
            return
        listed = a.pending
        self.skip = [k for k in self.skip if k in listed]  # what left the queue is forgotten
        for key in listed:
            if key in self.skip or key == self.finished:
                continue
            d = c.describe(key[0], key[1])
            if d.result == C.TIMEOUT:
                raise LinkDown("describe: no answer")
            ex = d.execution
            if d.result != C.ACCEPTED or ex is None or ex.status in TERMINAL:
                continue
            if ex.status == "QUEUED":
                u = c.update(ex.job_id, "IN_PROGRESS", None, ex.version, ex.execution_number,
                             step_timeout=self.cfg["step_timeout_min"])  # fmt: skip
                if u.result == C.TIMEOUT:
                    raise LinkDown("update: no answer")
                if u.result != C.ACCEPTED:
                    continue
                ex.version += 1
            c.head_changed = False
            self.want_next = True
            return self._run(ex)

    def _run(self, ex):
        started = time.ticks_ms()
        if ex.doc_error:
            return self._conclude(Job(self, ex), "REJECTED", {"reason": ex.doc_error}, started)
        try:
            op, doc, reason = ops.prepare(ex.doc, self.board)
        except Exception as e:
            op, doc, reason = None, None, "invalid document: " + _reason(e)
        ex.doc = None  # the Job holds the converted document
        if op is None:
            name = doc.get("operation") if isinstance(doc, dict) else None
            job = Job(self, ex, None, name[:64] if isinstance(name, str) else "")
            return self._conclude(job, "REJECTED", {"reason": reason}, started)
        job = Job(self, ex, doc, op.name, "running")
        if not op.idempotent:
            job.save()
        status, details = self._call(job, op.run)
        self._conclude(job, status, details, started)
        if not op.idempotent:
            ops.unload()  # an OTA's or a download's code leaves the heap with its job

    def _call(self, job, fn):
        """Run fn(job): (status, details), or (None, None) when the job was canceled."""
        self.job = job
        try:
            result = fn(job)
            status, details = "SUCCEEDED", result if isinstance(result, dict) else {}
        except ops.Canceled:
            status, details = None, None
        except Exception as e:  # a crashing handler fails its job, never the loop
            if not isinstance(e, ops.Failed):
                self.log("engine: job", job.id, "handler raised:")
                sys.print_exception(e)
            status, details = "FAILED", {"reason": _reason(e)}
        finally:
            self.job = None
        if job.canceled:
            return None, None
        return status, details

    def _conclude(self, job, status, details, started):
        ms = time.ticks_diff(time.ticks_ms(), started)
        if status is None:
            reason = "ended by the service, nothing more reported"
        else:
            reason = details.get("reason") if status != "SUCCEEDED" else None
        self.log("job", job.id, job.op or "-", status or "CANCELED", str(ms) + " ms" + (": " + reason if reason else ""))
        if status is None:
            self.canceled += 1
            return self._drop(job)
        if job.journaled:
            from jobs import details as D

            details = D.encode(details, self.cfg["max_details"])  # encoded once: sent as it is stored
            job.save(status, details.decode())  # the journal holds it as JSON text
        else:
            self.pending = (job, status, details)
        if not self.link.connected:
            self.connect()  # the handler released the link (job.release_link), or lost it
        self._finish(job, status, details)

    def _drop(self, job):
        if job.journaled:
            self.journal.clear()
            job.journaled = False
        self.pending = None
        self.finished = (job.id, job.execution_number)
        self.want_next = True

    def _finish(self, job, status, details):
        """Send the final update; the journal (or `pending`) keeps it until it is answered."""
        a = job.send(status, details)
        if a.result == C.ACCEPTED:
            if status == "SUCCEEDED":
                self.jobs_ok += 1
            else:
                self.jobs_failed += 1
            return self._drop(job)
        if a.result == C.TIMEOUT:
            raise LinkDown("update: no answer")  # kept: sent again after the reconnect
        if a.kind == C.RETRY:
            self.want_recover = True  # kept; try again later
            self._pause()
            return
        if job.canceled:
            self.canceled += 1
            self.log("engine: final update of", job.id, "dropped:", a.code)
            return self._drop(job)
        # refused twice (with its details, then with minimal ones): give it up and move on
        self.given_up += 1
        key = (job.id, job.execution_number)
        if key not in self.skip:
            self.skip.append(key)
            if len(self.skip) > _SKIP_CAP:
                self.skip.pop(0)
        self.log("engine: final update of", job.id, "refused:", a.code, "- given up, next job")
        self._drop(job)

    # -- after a reset or a reconnect -------------------------------------------------------

    def _recover(self):
        self.want_recover = False
        if self.pending is not None:
            job, status, details = self.pending
            return self._finish(job, status, details)
        entry = self.journal.read()
        if entry is None:
            return
        c = self.client
        phase = entry["phase"]
        job_id, number = entry["job_id"], entry.get("execution_number")
        a = c.describe(job_id, number, include_document=phase != "done")
        if a.result == C.TIMEOUT:
            raise LinkDown("describe: no answer")
        ex = a.execution
        if a.kind == C.RETRY:
            self.log("engine: describe of journaled job", job_id, "refused (" + str(a.code) + "); later")
            self.want_recover = True  # transient: never drop the journal for it
            self._pause()
            return
        if a.result == C.REJECTED or ex is None or ex.status in TERMINAL:
            self.log("engine: journaled job", job_id, "is over (" + str(a.code or (ex and ex.status)) + ")")
            self.journal.clear()
            self.finished = (job_id, number)
            return
        if phase == "claimed":
            return self._run(ex)  # journaled before the handler started
        op = ops.find(entry.get("op") or "")
        job = Job(self, ex, None, op.name if op else entry.get("op", ""), phase, entry.get("data") or {})
        job.journaled = True
        if phase == "done":
            details = entry.get("details")
            return self._finish(job, entry["status"], details.encode() if isinstance(details, str) else details)
        resume = getattr(op, "resume", None) if op is not None else None
        started = time.ticks_ms()
        if resume is None:
            return self._conclude(job, "FAILED", {"reason": INTERRUPTED}, started)
        if ex.doc is not None:
            job.doc = ops.prepare(ex.doc, self.board)[1]
        status, details = self._call(job, resume)
        self._conclude(job, status, details, started)
        ops.unload()


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        raise OSError("cannot read " + path + " (ca, cert, key in config.json)")


def build(cfg, board, log=print):
    """An Engine wired to a TLS MQTT link, from the loaded config and the board."""
    from jobs import mqtt, store, tls, token, topics
    from jobs.scan import Scanner

    root = getattr(board, "root", "")
    # the DER bytes go straight into the context and are not kept (about 3 KB)
    ctx = tls.context(
        _read(store.join(root, cfg["ca"])), _read(store.join(root, cfg["cert"])), _read(store.join(root, cfg["key"]))
    )
    link = mqtt.MQTT(
        cfg["thing_name"],
        cfg["endpoint"],
        cfg["port"],
        cfg["keepalive"],
        ssl=ctx,
        buffer_size=cfg["buffer_size"],
        connect_timeout_ms=cfg["connect_timeout_ms"],
        io_timeout_ms=cfg["request_timeout_ms"],
        log=log,
    )
    # kept strings are a token, a job id, a status, a code (64 at most) and a rejection's message
    # (cut to fit): 256 bytes of scratch, not the scanner's default 1 KiB
    scanner = Scanner(max_str=256)
    client = C.Client(link, topics.Topics(cfg["thing_name"]), token.Tokens(), scanner, cfg, log)
    telemetry = None
    if cfg["telemetry_interval_s"]:
        from jobs.telemetry import Telemetry

        telemetry = Telemetry(cfg, board)
    journal = store.Journal(store.join(root, cfg["journal"]))
    return Engine(cfg, board, link, client, journal, telemetry, log)
