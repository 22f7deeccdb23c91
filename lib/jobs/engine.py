# jobs.engine: claim, validate, run and report jobs, one at a time. MIT licence.
"""The Jobs engine: on boot, after a reconnect and on notify-next it asks start-next for work,
validates the document (ops.normalize / ops.validate), runs the operation with a `Job`, and
reports SUCCEEDED / FAILED / REJECTED with statusDetails. A journal (jobs.store.Journal)
records the execution and its phase so a reset is recovered, never silently dropped or re-run.

    from jobs import engine
    engine.run_forever(cfg, board)      # cfg from jobs.config.load(); never returns

See docs/engine.md for the rules (cancellation, duplicates, rejected codes, recovery).
"""

import gc
import sys
import time

from jobs import client as C
from jobs import ops
from jobs.mqtt import LinkDown

TERMINAL = ("SUCCEEDED", "FAILED", "REJECTED", "CANCELED", "TIMED_OUT", "REMOVED")
INTERRUPTED = "interrupted by reset, not re-run"
_FINAL_GONE = ("TerminalStateReached", "InvalidStateTransition")


def _reason(error):
    if isinstance(error, ops.Failed):
        return str(error.args[0]) if error.args else "failed"
    text = str(error)
    name = error.__class__.__name__
    return name + ": " + text if text else name


class Job:
    """What an operation's handler gets (docs/contracts.md, "The job object")."""

    def __init__(self, engine, ex, doc, op_name, phase=None, data=None):
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
        self._last_progress = None

    def progress(self, details=None, must=False):
        """Report IN_PROGRESS (rate-limited; re-arms the step timer). False: the job was
        canceled; clean up and raise ops.Canceled. must=True: send now (reconnecting if need
        be) and return True only when the service answered update/accepted."""
        if must:
            return self._engine._progress_accepted(self, details)
        return self._engine._progress(self, details)

    def checkpoint(self, phase, data=None):
        """Journal `phase` (and `data`) atomically, to resume from after a reset."""
        self.phase = phase
        if data is not None:
            self.data = data
        self._engine._journal_job(self)

    def reboot(self, details=None):
        """Journal, report IN_PROGRESS (accepted), then reset the board: never returns."""
        if self.phase in (None, "running"):
            self.phase = "reboot"
        self._engine._journal_job(self)
        if not self._engine._progress_accepted(self, details):
            if self.canceled:
                raise ops.Canceled()
            raise ops.Failed("could not report IN_PROGRESS before the reboot")
        self.board.reset("job " + self.id)


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
        self.job = None  # the Job running now
        self.want_next = True
        self.want_recover = True
        self.finished = None  # (job_id, execution_number) last finished or dropped
        self.retry_at = None  # ticks when a paused claim/report may be tried again
        self.jobs_ok = 0
        self.jobs_failed = 0
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
        self._feed()
        try:
            if not self.link.connected:
                self._connect()
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
            self.link.close()
            self.want_next = True
            self.want_recover = True

    def stats(self):
        return {
            "job": self.job.id if self.job else None,
            "jobs_ok": self.jobs_ok,
            "jobs_failed": self.jobs_failed,
            "reconnects": max(0, self.link.connects - 1),
            "ignored": self.client.ignored,
        }

    def _feed(self):
        if self.wdt is not None:
            self.wdt.feed()

    def _sleep(self, ms):
        while ms > 0:
            self._feed()
            step = min(ms, 1000)
            time.sleep_ms(step)
            ms -= step

    def _connect(self):
        cfg = self.cfg
        self.link.reconnect(
            self.client.topics.subscriptions(),
            cfg["reconnect_min_ms"],
            cfg["reconnect_max_ms"],
            idle=self._sleep,
        )
        self.log("engine: connected (" + str(self.link.connects) + ")")
        # never trust a lost notification: ask again after every (re)connect
        self.want_next = True
        self.want_recover = True

    def _telemetry(self):
        t = self.telemetry
        if t is not None:
            t.interval_s = self.cfg["telemetry_interval_s"]  # config.set may have changed it
        if t is not None and t.due():
            t.send(self.link, self.stats())

    def _idle(self, ms):
        if self.telemetry is not None:
            ms = min(ms, max(1, self.telemetry.ms_until_due()))
        self.link.wait(ms)
        self._check_head()

    def _check_head(self):
        c = self.client
        if not c.head_changed:
            return
        c.head_changed = False
        if c.head is None:
            return
        if c.head == self.finished:
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
        if self.cfg["query_next_first"]:
            r = c.describe("$next", include_document=False)
            if r == C.TIMEOUT:
                raise LinkDown("describe $next: no answer")
            if r == C.ACCEPTED and c.execution is None:
                return
        r = c.start_next(step_timeout=self.cfg["step_timeout_min"])
        if r == C.TIMEOUT:
            raise LinkDown("start-next: no answer")
        if r == C.REJECTED:
            self.want_next = True
            self._pause()
            return
        ex = c.execution
        if ex is None:
            return  # nothing pending: wait for notify-next
        if (ex.job_id, ex.execution_number) == self.finished:
            self.duplicates += 1  # handed out again after we dropped it: never re-run
            return
        c.head_changed = False
        self._run(ex)

    def _entry(self, ex, phase):
        return {"job_id": ex.job_id, "execution_number": ex.execution_number, "phase": phase}

    def _run(self, ex):
        entry = self._entry(ex, "claimed")
        self.journal.write(entry)
        if ex.doc_error:
            return self._conclude(entry, ex, "FAILED", {"reason": ex.doc_error})
        try:
            doc = ops.normalize(ex.doc)
            op, reason = ops.validate(doc, self.board)
        except Exception as e:
            op, reason = None, "invalid document: " + _reason(e)
        if op is None:
            return self._conclude(entry, ex, "REJECTED", {"reason": reason})
        ex.doc = None  # the Job holds the normalized document
        job = Job(self, ex, doc, op.name, "running")
        self._journal_job(job)
        status, details = self._call(job, op.run)
        ex.version = job.version
        self._conclude(entry, ex, status, details)

    def _call(self, job, fn):
        """Run fn(job): (status, details), or (None, None) when the job was canceled."""
        self.job = job
        try:
            result = fn(job)
            status, details = "SUCCEEDED", result if isinstance(result, dict) else {}
        except ops.Canceled:
            status, details = None, None
        except Exception as e:  # a crashing handler fails its job, never the loop
            status, details = "FAILED", {"reason": _reason(e)}
        finally:
            self.job = None
        if job.canceled:
            return None, None
        return status, details

    def _conclude(self, entry, ex, status, details):
        if status is None:
            self.log("engine: job", ex.job_id, "canceled; nothing more reported")
            self.canceled += 1
            self._drop(entry)
            return
        entry["phase"] = "done"
        entry["status"] = status
        entry["details"] = C.clean_details(details)
        self.journal.write(entry)
        gc.collect()
        self._finish(entry, ex.version)

    def _drop(self, entry):
        self.journal.clear()
        self.finished = (entry["job_id"], entry["execution_number"])
        self.want_next = True

    def _finish(self, entry, version):
        """Send the stored final update; reconcile a VersionMismatch once."""
        c = self.client
        job_id, number = entry["job_id"], entry["execution_number"]
        for _ in range(2):
            r = c.update(job_id, entry["status"], entry["details"], version, number)
            if r == C.ACCEPTED:
                if entry["status"] == "SUCCEEDED":
                    self.jobs_ok += 1
                else:
                    self.jobs_failed += 1
                self._drop(entry)
                return
            if r == C.TIMEOUT:
                raise LinkDown("update: no answer")  # journal stays "done": resent later
            code = c.code
            if code == "VersionMismatch":
                r = c.describe(job_id, number, include_document=False)
                if r == C.TIMEOUT:
                    raise LinkDown("describe: no answer")
                ex = c.execution
                if r == C.ACCEPTED and ex is not None and ex.status not in TERMINAL:
                    version = ex.version
                    continue  # reconciled: try once more with the service's version
            if code in ("RequestThrottled", "InternalError"):
                self.want_recover = True  # keep the journal; try again later
                self._pause()
                return
            if code in _FINAL_GONE or code == "VersionMismatch":
                self.canceled += 1
            self.log("engine: final update of", job_id, "dropped:", code)
            self._drop(entry)
            return
        self.log("engine: final update of", job_id, "dropped: version kept changing")
        self._drop(entry)

    # -- progress, from inside a handler ----------------------------------------------------

    def _journal_job(self, job):
        entry = {
            "job_id": job.id,
            "execution_number": job.execution_number,
            "phase": job.phase or "running",
            "op": job.op,
        }
        if job.data:
            entry["data"] = job.data
        self.journal.write(entry)

    def _pump(self):
        """Handle what has arrived (notify-next) without waiting."""
        if not self.link.connected:
            return
        for _ in range(16):
            if not self.link.wait(0):
                break

    def _progress(self, job, details):
        if job.canceled:
            return False
        self._feed()
        try:
            self._pump()
        except OSError as e:
            self.log("engine: link lost during job:", _reason(e))
            self.link.close()
        c = self.client
        if c.head_changed:
            c.head_changed = False
            if c.head != (job.id, job.execution_number):
                # notify-next shows another head (or none): our execution is over
                job.canceled = True
                return False
        interval = self.cfg["progress_interval_ms"]
        if job._last_progress is not None and (
            time.ticks_diff(time.ticks_ms(), job._last_progress) < interval
        ):
            return True
        self._report_progress(job, details)
        return not job.canceled

    def _progress_accepted(self, job, details):
        if job.canceled:
            return False
        self._feed()
        for _ in range(2):  # a second try only after a VersionMismatch was reconciled
            version = job.version
            if self._report_progress(job, details, must=True):
                return True
            if job.canceled or job.version == version:
                return False
        return False

    def _report_progress(self, job, details, must=False):
        """IN_PROGRESS update; True when accepted. Sets job.canceled when the execution is over."""
        if not self.link.connected:
            if not must:
                return False
            self._connect()
        job._last_progress = time.ticks_ms()
        c = self.client
        try:
            r = c.update(
                job.id,
                "IN_PROGRESS",
                details,
                job.version,
                job.execution_number,
                step_timeout=self.cfg["step_timeout_min"],
            )
            if r == C.ACCEPTED:
                job.version = c.state_version if c.state_version else job.version + 1
                return True
            if r == C.REJECTED:
                if c.code in _FINAL_GONE:
                    job.canceled = True
                elif c.code == "VersionMismatch":
                    r = c.describe(job.id, job.execution_number, include_document=False)
                    ex = c.execution
                    if r == C.ACCEPTED and ex is not None:
                        if ex.status in TERMINAL:
                            job.canceled = True
                        else:
                            job.version = ex.version
        except OSError as e:
            self.log("engine: link lost during job:", _reason(e))
            self.link.close()
        return False

    # -- after a reset or a reconnect -------------------------------------------------------

    def _recover(self):
        self.want_recover = False
        entry = self.journal.read()
        if entry is None:
            return
        c = self.client
        phase = entry["phase"]
        key = (entry["job_id"], entry.get("execution_number"))
        r = c.describe(entry["job_id"], entry.get("execution_number"), include_document=phase != "done")
        if r == C.TIMEOUT:
            raise LinkDown("describe: no answer")
        ex = c.execution
        if r == C.REJECTED and c.code in ("RequestThrottled", "InternalError"):
            self.log("engine: describe of journaled job", key[0], "refused (" + c.code + "); later")
            self.want_recover = True  # transient: never drop the journal for it
            self._pause()
            return
        if r == C.REJECTED or ex is None or ex.status in TERMINAL:
            self.log("engine: journaled job", key[0], "is over (" + str(c.code or (ex and ex.status)) + ")")
            self._drop(entry)
            return
        if phase == "done":
            return self._finish(entry, ex.version)
        if phase == "claimed":
            return self._run(ex)  # the handler never ran
        op = ops.find(entry.get("op") or "")
        resume = getattr(op, "resume", None) if op is not None else None
        if op is None or resume is None:
            return self._conclude(entry, ex, "FAILED", {"reason": INTERRUPTED})
        doc = ops.normalize(ex.doc) if ex.doc is not None else None
        job = Job(self, ex, doc, op.name, phase, entry.get("data") or {})
        status, details = self._call(job, resume)
        ex.version = job.version
        self._conclude(entry, ex, status, details)


def _path(root, p):
    if p.startswith("/") or not root:
        return p
    return root.rstrip("/") + "/" + p


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
    from jobs.telemetry import Telemetry

    root = getattr(board, "root", "")
    # the DER bytes go straight into the context and are not kept (about 3 KB)
    ctx = tls.context(
        _read(_path(root, cfg["ca"])), _read(_path(root, cfg["cert"])), _read(_path(root, cfg["key"]))
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
    client = C.Client(link, topics.Topics(cfg["thing_name"]), token.Tokens(), Scanner(), cfg, log)
    telemetry = Telemetry(cfg["thing_name"], cfg["telemetry_interval_s"], cfg["app_version"])
    journal = store.Journal(_path(root, cfg["journal"]))
    return Engine(cfg, board, link, client, journal, telemetry, log)


def run_forever(cfg, board, log=print):
    """The device entry point: network up, then claim and run jobs for ever.

    With `watchdog_ms` set, the board's watchdog is started and fed by the loop, by waits
    and by job.progress(): a hung loop or a handler silent for that long resets the board.
    """
    board.connect_network(30000)
    eng = build(cfg, board, log)
    if cfg["watchdog_ms"]:
        eng.wdt = board.watchdog(cfg["watchdog_ms"])
    eng.run_forever()
