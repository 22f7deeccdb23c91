"""The Jobs state machine: device requests (MQTT) and control-plane operations on one store.

Every operation runs in one transaction and returns the MQTT messages it causes, in the order
AWS sends them: the response first, then `notify`, then `notify-next`. The reference is
/work/shared/aws-jobs-api.md (sections 1-7 and 13); section numbers below point into it.
"""

import functools
import json
import re
import secrets
import time
import unicodedata
from urllib.parse import quote

from tools.standin import templates
from tools.standin.store import Store, now

PENDING = ("QUEUED", "IN_PROGRESS")
TERMINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "REJECTED", "REMOVED", "CANCELED")
DEVICE_STATUSES = ("IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED")
ALL_STATUSES = PENDING + TERMINAL
MAX_STEP_MINUTES = 10080

JOB_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}\Z")
THING_NAME = re.compile(r"[a-zA-Z0-9:_-]{1,128}\Z")
_DETAIL_KEY = re.compile(r"[a-zA-Z0-9:_-]{1,128}\Z")
_PRESIGNED = re.compile(r"\$\{aws:iot:s3-presigned-url:([^}]+)\}")
_PARAMETER = re.compile(r"\$\{aws:iot:parameter:([a-zA-Z0-9_-]+)\}")
_S3_URL = re.compile(r"https://s3(?:[.-][a-z0-9-]+)?\.amazonaws\.com/([^/]+)/(.+)\Z")


class Rejected(Exception):
    """A device request answered on `.../rejected`."""

    def __init__(self, code: str, message: str, state: dict | None = None):
        super().__init__(message)
        self.code, self.message, self.state = code, message, state


class ApiError(Exception):
    """A control-plane error as AWS shapes it: HTTP status and exception name."""

    def __init__(self, error_type: str, message: str, status: int = 400):
        super().__init__(message)
        self.error_type, self.message, self.status = error_type, message, status


def _json(payload: dict) -> str:
    return json.dumps(payload, separators=(",", ":"))


def _stamp(value):
    return None if value is None else int(value)


@functools.lru_cache(maxsize=4096)
def _parsed(text: str):
    """JSON text parsed once (job bodies and documents are immutable; callers never mutate)."""
    return json.loads(text)


def _prune(obj: dict) -> dict:
    """AWS omits absent fields instead of sending null."""
    return {k: v for k, v in obj.items() if v is not None}


def _as_int(value, name: str, lo: int | None = None, hi: int | None = None, allow=()):
    """A number sent as a JSON number or a numeric string (§2); InvalidRequest otherwise."""
    if isinstance(value, bool):
        raise Rejected("InvalidRequest", f"{name} must be a number")
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,18}", value):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise Rejected("InvalidRequest", f"{name} must be a number")
    if value in allow:
        return value
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise Rejected("InvalidRequest", f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _as_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise Rejected("InvalidRequest", f"{name} must be true or false")
    return value


def check_status_details(details, max_pairs: int = 10) -> dict:
    """statusDetails rules (§7): flat string map, <= 10 pairs, key pattern, 1-1024 chars, no \\p{C}."""
    if not isinstance(details, dict):
        raise Rejected("InvalidRequest", "statusDetails must be an object of string values")
    if len(details) > max_pairs:
        raise Rejected("InvalidRequest", f"statusDetails has {len(details)} pairs, at most {max_pairs}")
    for key, value in details.items():
        if not _DETAIL_KEY.match(key):
            raise Rejected("InvalidRequest", f"statusDetails key {key!r} must match [a-zA-Z0-9:_-]+")
        if not isinstance(value, str):
            raise Rejected("InvalidRequest", f"statusDetails value of {key!r} must be a string")
        if not 1 <= len(value) <= 1024:
            raise Rejected("InvalidRequest", f"statusDetails value of {key!r} must be 1-1024 chars")
        if any(unicodedata.category(ch)[0] == "C" for ch in value):
            raise Rejected("InvalidRequest", f"statusDetails value of {key!r} has a control character")
    return details


class Engine:
    """Jobs logic over a Store. Thread-safe (each call is one transaction)."""

    def __init__(self, store: Store):
        self.store = store
        self.settings = store.settings()

    def refresh_settings(self) -> dict:
        self.settings = self.store.settings()
        return self.settings

    # ----- ARNs ---------------------------------------------------------------------------
    def _arn(self, kind: str, name: str) -> str:
        return f"arn:aws:iot:{self.settings['region']}:{self.settings['account']}:{kind}/{name}"

    # ----- documents ----------------------------------------------------------------------
    def _presign(self, db, url: str, expires_in: int, at: float) -> str:
        match = _S3_URL.match(url)
        key = match.group(2) if match else url.rsplit("/", 1)[-1]
        token = secrets.token_hex(16)
        db.execute(
            "INSERT INTO presigned (token, path, expires) VALUES (?, ?, ?)", (token, key, at + expires_in)
        )
        host, port = self.settings["files_host"], self.settings["files_port"]
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(at))
        return (
            f"https://{host}:{port}/{quote(key)}?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            f"&X-Amz-Date={stamp}&X-Amz-Expires={expires_in}&X-Amz-Signature={token}"
        )

    def render_document(self, db, job, presign: bool = True, at: float | None = None) -> str:
        """The document as delivered: parameters substituted, presigned URLs fresh each time."""
        text = job["document"]
        if presign and "${aws:iot:s3-presigned-url:" in text:
            expires = int(_parsed(job["body"]).get("presignedUrlConfig", {}).get("expiresInSec", 3600))
            at = now() if at is None else at

            def fresh(match):
                url = self._presign(db, match.group(1), expires, at)
                return json.dumps(url)[1:-1]

            text = _PRESIGNED.sub(fresh, text)
        return text

    def _document_object(self, db, job, at):
        if "${aws:iot:s3-presigned-url:" not in job["document"]:
            return _parsed(job["document"])  # the same text on every delivery: parse it once
        return json.loads(self.render_document(db, job, at=at))

    # ----- views --------------------------------------------------------------------------
    def _remaining(self, row, at: float):
        deadlines = [d for d in (row["step_deadline"], row["progress_deadline"]) if d]
        if row["status"] != "IN_PROGRESS" or not deadlines:
            return None
        scale = 60.0 / float(self.settings["minute_seconds"])
        return max(0, int(round((min(deadlines) - at) * scale)))

    def _execution(self, db, row, job, include_document: bool, at: float) -> dict:
        details = json.loads(row["status_details"]) if row["status_details"] else None
        return _prune(
            {
                "jobId": row["job_id"],
                "status": row["status"],
                "statusDetails": details or None,
                "queuedAt": _stamp(row["queued_at"]),
                "startedAt": _stamp(row["started_at"]),
                "lastUpdatedAt": _stamp(row["last_updated_at"]),
                "approximateSecondsBeforeTimedOut": self._remaining(row, at),
                "versionNumber": row["version"],
                "executionNumber": row["execution_number"],
                "jobDocument": self._document_object(db, job, at) if include_document else None,
            }
        )

    @staticmethod
    def _summary(row) -> dict:
        return _prune(
            {
                "jobId": row["job_id"],
                "queuedAt": _stamp(row["queued_at"]),
                "startedAt": _stamp(row["started_at"]),
                "lastUpdatedAt": _stamp(row["last_updated_at"]),
                "versionNumber": row["version"],
                "executionNumber": row["execution_number"],
            }
        )

    @staticmethod
    def _state(row) -> dict:
        details = json.loads(row["status_details"]) if row["status_details"] else None
        return _prune(
            {"status": row["status"], "statusDetails": details or None, "versionNumber": row["version"]}
        )

    # ----- queries ------------------------------------------------------------------------
    @staticmethod
    def _pending(db, thing: str, limit: int = -1) -> list:
        """Pending executions in $next order: IN_PROGRESS first, then QUEUED, each oldest first."""
        return db.execute(
            "SELECT * FROM executions WHERE thing = ? AND status IN ('QUEUED', 'IN_PROGRESS') "
            "ORDER BY status = 'IN_PROGRESS' DESC, seq LIMIT ?",
            (thing, limit),
        ).fetchall()

    @staticmethod
    def _head(db, thing: str):
        """The $next execution (oldest IN_PROGRESS, else oldest QUEUED) or None: two index probes."""
        for status in ("IN_PROGRESS", "QUEUED"):
            row = db.execute(
                "SELECT * FROM executions WHERE thing = ? AND status = ? ORDER BY seq LIMIT 1",
                (thing, status),
            ).fetchone()
            if row is not None:
                return row
        return None

    @staticmethod
    def _job(db, job_id: str):
        return db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()

    @staticmethod
    def _latest(db, job_id: str, thing: str, number=None):
        if number is None:
            return db.execute(
                "SELECT * FROM executions WHERE job_id = ? AND thing = ? "
                "ORDER BY execution_number DESC LIMIT 1",
                (job_id, thing),
            ).fetchone()
        return db.execute(
            "SELECT * FROM executions WHERE job_id = ? AND thing = ? AND execution_number = ?",
            (job_id, thing, number),
        ).fetchone()

    @staticmethod
    def _get(db, seq: int):
        return db.execute("SELECT * FROM executions WHERE seq = ?", (seq,)).fetchone()

    # ----- notifications (§5) -------------------------------------------------------------
    @staticmethod
    def _snapshot(db, thing: str):
        """(head row, fingerprint of the pending set) without reading the whole queue.

        The fingerprint is (count, sum of seq). Between a snapshot and the next one a change
        only removes executions or adds new ones, and seq is AUTOINCREMENT (a new one exceeds
        every existing one), so equal fingerprints mean an equal set.
        """
        fingerprint = tuple(
            db.execute(
                "SELECT count(*), total(seq) FROM executions WHERE thing = ? "
                "AND status IN ('QUEUED', 'IN_PROGRESS')",
                (thing,),
            ).fetchone()
        )
        return Engine._head(db, thing), fingerprint

    def _notifications(self, db, thing: str, before, at: float) -> list:
        """notify when the pending set changed; notify-next when the head changed."""
        old_head_row, old_keys = before
        head_row, keys = self._snapshot(db, thing)
        messages = []
        prefix = f"$aws/things/{thing}/jobs/"
        stamp = int(at)
        if keys != old_keys:
            jobs: dict = {}
            for row in self._pending(db, thing, int(self.settings["pending_list_limit"])):
                jobs.setdefault(row["status"], []).append(self._summary(row))
            ordered = {s: jobs[s] for s in ("IN_PROGRESS", "QUEUED") if s in jobs}
            messages.append((prefix + "notify", {"timestamp": stamp, "jobs": ordered}))
        old_head = (old_head_row["job_id"], old_head_row["execution_number"]) if old_head_row else None
        head = (head_row["job_id"], head_row["execution_number"]) if head_row else None
        if head != old_head:
            payload: dict = {"timestamp": stamp}
            if head_row is not None:
                job = self._job(db, head_row["job_id"])
                payload["execution"] = self._execution(db, head_row, job, True, at)
            messages.append((prefix + "notify-next", payload))
        return messages

    # ----- device requests (§4) -----------------------------------------------------------
    def handle(self, topic: str, payload: bytes) -> list:
        """Answer one request published under $aws/things/+/jobs/; [] for our own outputs."""
        route = classify(topic)
        if route is None:
            return []
        kind, thing, job_id = route
        at = now()
        reply = topic
        token = None
        try:
            if kind == "invalid":
                token = self._token_of(payload)
                raise Rejected("InvalidTopic", f"topic {topic} does not map to a Jobs API")
            request = self._parse(payload)
            token = request.get("clientToken")
            if token is not None and (not isinstance(token, str) or not 1 <= len(token) <= 64):
                token = None
                raise Rejected("InvalidRequest", "clientToken must be a string of 1-64 characters")
            with self.store.transaction() as db:
                if kind == "get":
                    answer, extra = self._get_pending(db, thing, request), []
                elif kind == "start-next":
                    answer, extra = self._start_next(db, thing, request, at)
                elif kind == "describe":
                    answer, extra = self._describe(db, thing, job_id, request, at), []
                else:
                    answer, extra = self._update(db, thing, job_id, request, at)
        except Rejected as err:
            rejected = {"code": err.code, "message": err.message}
            if token is not None:
                rejected["clientToken"] = token
            rejected["timestamp"] = int(at)
            if err.state is not None:
                rejected["executionState"] = err.state
            return [(reply + "/rejected", rejected)]
        accepted = {"timestamp": int(at)}
        if token is not None:
            accepted["clientToken"] = token
        accepted.update(answer)
        return [(reply + "/accepted", accepted)] + extra

    def _token_of(self, payload: bytes):
        try:
            token = self._parse(payload).get("clientToken")
        except Rejected:
            return None
        return token if isinstance(token, str) and 1 <= len(token) <= 64 else None

    def reject(self, topic: str, payload: bytes, code: str, message: str) -> list:
        """A fault-injected rejection (RequestThrottled, InternalError) for a request topic."""
        if classify(topic) is None:
            return []
        token = self._token_of(payload)
        rejected = {"code": code, "message": message}
        if token is not None:
            rejected["clientToken"] = token
        rejected["timestamp"] = int(now())
        return [(topic + "/rejected", rejected)]

    def _parse(self, payload: bytes) -> dict:
        if not payload and self.settings["empty_payload"] == "empty-object":
            return {}
        try:
            request = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise Rejected("InvalidJson", "the payload is not valid UTF-8 JSON") from None
        if not isinstance(request, dict):
            raise Rejected("InvalidJson", "the payload must be a JSON object")
        return request

    def _get_pending(self, db, thing: str, request: dict) -> dict:
        rows = self._pending(db, thing, int(self.settings["pending_list_limit"]))
        return {
            "inProgressJobs": [self._summary(r) for r in rows if r["status"] == "IN_PROGRESS"],
            "queuedJobs": [self._summary(r) for r in rows if r["status"] == "QUEUED"],
        }

    def _step_deadline(self, row, minutes: int, at: float):
        deadline = at + minutes * float(self.settings["minute_seconds"])
        if row["progress_deadline"]:
            deadline = min(deadline, row["progress_deadline"])
        return deadline

    def _start_next(self, db, thing: str, request: dict, at: float):
        details = request.get("statusDetails")
        if details is not None:
            check_status_details(details, int(self.settings["status_details_max_pairs"]))
        step = request.get("stepTimeoutInMinutes")
        if step is not None:
            step = _as_int(step, "stepTimeoutInMinutes", 1, MAX_STEP_MINUTES)
        before = self._snapshot(db, thing)
        row = before[0]
        if row is None:
            return {}, []
        job = self._job(db, row["job_id"])
        if row["status"] == "QUEUED":
            progress = self._progress_deadline(job, at)
            step_deadline = None
            if step is not None:
                step_deadline = at + step * float(self.settings["minute_seconds"])
                if progress:
                    step_deadline = min(step_deadline, progress)
            db.execute(
                "UPDATE executions SET status = 'IN_PROGRESS', started_at = ?, last_updated_at = ?, "
                "version = version + 1, status_details = COALESCE(?, status_details), "
                "step_deadline = ?, progress_deadline = ? WHERE seq = ?",
                (
                    at,
                    at,
                    _json(details) if details is not None else None,
                    step_deadline,
                    progress,
                    row["seq"],
                ),
            )
        elif step is not None and self.settings["start_next_rearms_step_timer"]:
            db.execute(
                "UPDATE executions SET step_deadline = ? WHERE seq = ?",
                (self._step_deadline(row, step, at), row["seq"]),
            )
        row = self._get(db, row["seq"])
        answer = {"execution": self._execution(db, row, job, True, at)}
        return answer, self._notifications(db, thing, before, at)

    def _progress_deadline(self, job, at: float):
        minutes = _parsed(job["body"]).get("timeoutConfig", {}).get("inProgressTimeoutInMinutes")
        return at + minutes * float(self.settings["minute_seconds"]) if minutes else None

    def _describe(self, db, thing: str, job_id: str, request: dict, at: float) -> dict:
        number = request.get("executionNumber")
        if number is not None:
            number = _as_int(number, "executionNumber", 0)
        include = request.get("includeJobDocument", True)
        include = _as_bool(include, "includeJobDocument")
        if job_id == "$next":
            row = self._head(db, thing)
            if row is None:
                return {}
        else:
            row = self._latest(db, job_id, thing, number)
            if row is None:
                raise Rejected("ResourceNotFound", f"no execution of job {job_id} on thing {thing}")
            if row["status"] in TERMINAL and self.settings["describe_terminal_rejects"]:
                raise Rejected("TerminalStateReached", f"execution of {job_id} is {row['status']}")
        job = self._job(db, row["job_id"])
        return {"execution": self._execution(db, row, job, include, at)}

    def _update(self, db, thing: str, job_id: str, request: dict, at: float):
        if "status" not in request or request["status"] is None:
            raise Rejected(
                "InvalidRequest",
                "Value null at 'status' failed to satisfy constraint: Member must not be null",
            )
        status = request["status"]
        settable = DEVICE_STATUSES + (("CANCELED",) if self.settings["device_may_cancel"] else ())
        if not isinstance(status, str) or (status not in settable and status != "QUEUED"):
            raise Rejected("InvalidRequest", f"status {status!r} cannot be set by a device")
        details = request.get("statusDetails")
        if details is not None:
            check_status_details(details, int(self.settings["status_details_max_pairs"]))
        if status in TERMINAL and job_id in self.settings["refuse_terminal_updates"]:
            raise Rejected("InvalidRequest", "terminal update refused (fault injection)")
        expected = request.get("expectedVersion")
        if expected is not None:
            expected = _as_int(expected, "expectedVersion")
        number = request.get("executionNumber")
        if number is not None:
            number = _as_int(number, "executionNumber", 0)
        include_state = _as_bool(request.get("includeJobExecutionState", False), "includeJobExecutionState")
        include_document = _as_bool(request.get("includeJobDocument", False), "includeJobDocument")
        step = request.get("stepTimeoutInMinutes")
        if step is not None:
            step = _as_int(step, "stepTimeoutInMinutes", 1, MAX_STEP_MINUTES, allow=(-1,))
        row = self._latest(db, job_id, thing, number)
        if row is None:
            raise Rejected("ResourceNotFound", f"no execution of job {job_id} on thing {thing}")
        if expected is not None and expected != row["version"]:
            raise Rejected(
                "VersionMismatch",
                f"Expected version {expected} but found version {row['version']}",
                self._state(row),
            )
        if row["status"] in TERMINAL:
            raise Rejected(
                self.settings["update_terminal_code"],
                f"execution of {job_id} is already {row['status']}",
                self._state(row),
            )
        if status == "QUEUED":
            raise Rejected(
                "InvalidStateTransition", f"cannot go from {row['status']} to QUEUED", self._state(row)
            )
        before = self._snapshot(db, thing)
        job = self._job(db, job_id)
        if details is not None and self.settings["status_details_merge"] and row["status_details"]:
            details = {**json.loads(row["status_details"]), **details}
        started, progress, step_deadline = row["started_at"], row["progress_deadline"], row["step_deadline"]
        if status == "IN_PROGRESS":
            if row["status"] == "QUEUED":
                started, progress = at, self._progress_deadline(job, at)
            if step == -1:
                step_deadline = None
            elif step is not None:
                step_deadline = at + step * float(self.settings["minute_seconds"])
                if progress:
                    step_deadline = min(step_deadline, progress)
        else:
            step_deadline = progress = None
        db.execute(
            "UPDATE executions SET status = ?, status_details = COALESCE(?, status_details), "
            "started_at = ?, last_updated_at = ?, version = version + 1, step_deadline = ?, "
            "progress_deadline = ? WHERE seq = ?",
            (
                status,
                _json(details) if details is not None else None,
                started,
                at,
                step_deadline,
                progress,
                row["seq"],
            ),
        )
        row = self._get(db, row["seq"])
        if status in TERMINAL:
            self._after_terminal(db, row, job, at)
        answer = {}
        if include_state:
            answer["executionState"] = self._state(row)
        if include_document:
            answer["jobDocument"] = self._document_object(db, job, at)
        return answer, self._notifications(db, thing, before, at)

    # ----- terminal states, retries, job completion ---------------------------------------
    def _after_terminal(self, db, row, job, at: float) -> None:
        status = row["status"]
        if status in ("FAILED", "TIMED_OUT") and job["status"] == "IN_PROGRESS":
            criteria = _parsed(job["body"]).get("jobExecutionsRetryConfig", {}).get("criteriaList", [])
            criterion = next((c for c in criteria if c.get("failureType") == status), None) or next(
                (c for c in criteria if c.get("failureType") == "ALL"), None
            )
            if criterion and criterion.get("numberOfRetries"):
                causes = [
                    r["retry_cause"]
                    for r in db.execute(
                        "SELECT retry_cause FROM executions WHERE job_id = ? AND thing = ? "
                        "AND retry_cause IS NOT NULL",
                        (row["job_id"], row["thing"]),
                    )
                ]
                used = len(causes) if criterion["failureType"] == "ALL" else causes.count(status)
                if used < criterion["numberOfRetries"] and len(causes) < 10:
                    number = row["execution_number"] + 1
                    self._queue(db, row["job_id"], row["thing"], at, number, len(causes) + 1, status)
                    return
        self._maybe_complete(db, job["job_id"], at)

    @staticmethod
    def _queue(db, job_id, thing, at, number=1, attempt=0, cause=None) -> None:
        db.execute(
            "INSERT INTO executions (job_id, thing, execution_number, status, queued_at, "
            "last_updated_at, version, force_canceled, retry_attempt, retry_cause) "
            "VALUES (?, ?, ?, 'QUEUED', ?, ?, 1, 0, ?, ?)",
            (job_id, thing, number, at, at, attempt, cause),
        )

    def _maybe_complete(self, db, job_id: str, at: float) -> None:
        job = self._job(db, job_id)
        if job is None or job["status"] != "IN_PROGRESS":
            return
        if _parsed(job["body"]).get("targetSelection", "SNAPSHOT") != "SNAPSHOT":
            return
        busy = db.execute(
            "SELECT 1 FROM executions WHERE job_id = ? AND status IN ('QUEUED', 'IN_PROGRESS') LIMIT 1",
            (job_id,),
        ).fetchone()
        if not busy:
            db.execute(
                "UPDATE jobs SET status = 'COMPLETED', completed = ?, updated = ? WHERE job_id = ?",
                (at, at, job_id),
            )

    def _service_set(self, db, row, status: str, at: float, details=None, force=False) -> list:
        """A service-side change (timeout, cancel, removal): bump version, notify."""
        before = self._snapshot(db, row["thing"])
        db.execute(
            "UPDATE executions SET status = ?, last_updated_at = ?, version = version + ?, "
            "status_details = COALESCE(?, status_details), step_deadline = NULL, "
            "progress_deadline = NULL, force_canceled = ? WHERE seq = ?",
            (
                status,
                at,
                int(self.settings["service_version_bump"]),
                _json(details) if details else None,
                1 if force else row["force_canceled"],
                row["seq"],
            ),
        )
        job = self._job(db, row["job_id"])
        self._after_terminal(db, self._get(db, row["seq"]), job, at)
        return self._notifications(db, row["thing"], before, at)

    def expire(self, at: float | None = None) -> list:
        """Move IN_PROGRESS executions whose step or in-progress timer ran out to TIMED_OUT."""
        at = now() if at is None else at
        with self.store.transaction() as db:
            due = db.execute(
                "SELECT * FROM executions WHERE status = 'IN_PROGRESS' AND "
                "((step_deadline IS NOT NULL AND step_deadline <= ?) OR "
                "(progress_deadline IS NOT NULL AND progress_deadline <= ?)) ORDER BY seq",
                (at, at),
            ).fetchall()
            messages = []
            for row in due:
                messages += self._service_set(db, row, "TIMED_OUT", at)
            return messages

    # ----- outbox: notifications caused by the control plane ------------------------------
    @staticmethod
    def _post(db, messages) -> None:
        db.executemany(
            "INSERT INTO outbox (topic, payload) VALUES (?, ?)",
            [(topic, _json(payload)) for topic, payload in messages],
        )

    def outbox_after(self, after: int, limit: int = 500) -> list:
        """Waiting notifications with id > after: [(id, topic, payload)], oldest first."""
        rows = (
            self.store.read()
            .execute("SELECT * FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (after, limit))
            .fetchall()
        )
        return [(r["id"], r["topic"], json.loads(r["payload"])) for r in rows]

    def ack_outbox(self, ids) -> None:
        """Forget notifications the broker has acknowledged."""
        with self.store.transaction() as db:
            db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    # ----- control plane: things and groups -----------------------------------------------
    def create_thing(self, name: str, body: dict | None = None) -> dict:
        body = body or {}
        if not THING_NAME.match(name or ""):
            raise ApiError("InvalidRequestException", f"thingName {name!r} must match [a-zA-Z0-9:_-]+")
        attributes = (body.get("attributePayload") or {}).get("attributes") or {}
        with self.store.transaction() as db:
            row = db.execute("SELECT * FROM things WHERE name = ?", (name,)).fetchone()
            if row is not None:
                if json.loads(row["attributes"]) != attributes or row["type_name"] != body.get(
                    "thingTypeName"
                ):
                    raise ApiError(
                        "ResourceAlreadyExistsException",
                        f"Thing {name} already exists with different attributes",
                        409,
                    )
                thing_id = row["thing_id"]
            else:
                thing_id = secrets.token_hex(16)
                db.execute(
                    "INSERT INTO things VALUES (?, ?, ?, ?, 1, ?)",
                    (name, thing_id, body.get("thingTypeName"), _json(attributes), now()),
                )
        return {"thingName": name, "thingArn": self._arn("thing", name), "thingId": thing_id}

    def describe_thing(self, name: str) -> dict:
        row = self.store.read().execute("SELECT * FROM things WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise ApiError("ResourceNotFoundException", f"Thing {name} cannot be found.", 404)
        return _prune(
            {
                "defaultClientId": name,
                "thingName": name,
                "thingId": row["thing_id"],
                "thingArn": self._arn("thing", name),
                "thingTypeName": row["type_name"],
                "attributes": json.loads(row["attributes"]),
                "version": row["version"],
            }
        )

    def list_things(self) -> dict:
        rows = self.store.read().execute("SELECT name FROM things ORDER BY name").fetchall()
        return {
            "things": [
                {"thingName": r["name"], "thingArn": self._arn("thing", r["name"]), "attributes": {}}
                for r in rows
            ]
        }

    def create_thing_group(self, name: str, body: dict | None = None) -> dict:
        if not THING_NAME.match(name or ""):
            raise ApiError("InvalidRequestException", f"thingGroupName {name!r} is not valid")
        with self.store.transaction() as db:
            row = db.execute("SELECT * FROM thing_groups WHERE name = ?", (name,)).fetchone()
            group_id = row["group_id"] if row else secrets.token_hex(16)
            if row is None:
                description = ((body or {}).get("thingGroupProperties") or {}).get("thingGroupDescription")
                db.execute(
                    "INSERT INTO thing_groups VALUES (?, ?, ?, ?)", (name, group_id, description, now())
                )
        return {
            "thingGroupName": name,
            "thingGroupArn": self._arn("thinggroup", name),
            "thingGroupId": group_id,
        }

    def describe_thing_group(self, name: str) -> dict:
        row = self.store.read().execute("SELECT * FROM thing_groups WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise ApiError("ResourceNotFoundException", f"Thing group {name} cannot be found.", 404)
        return _prune(
            {
                "thingGroupName": name,
                "thingGroupId": row["group_id"],
                "thingGroupArn": self._arn("thinggroup", name),
                "version": 1,
                "thingGroupProperties": _prune({"thingGroupDescription": row["description"]}),
                "thingGroupMetadata": {"creationDate": row["created"]},
                "status": "ACTIVE",
            }
        )

    @staticmethod
    def _name_from(body: dict, name_key: str, arn_key: str) -> str | None:
        if body.get(name_key):
            return body[name_key]
        arn = body.get(arn_key)
        return arn.rsplit("/", 1)[-1] if arn else None

    def add_thing_to_group(self, body: dict) -> dict:
        group = self._name_from(body, "thingGroupName", "thingGroupArn")
        thing = self._name_from(body, "thingName", "thingArn")
        if not group or not thing:
            raise ApiError("InvalidRequestException", "a thing group and a thing are required")
        at = now()
        with self.store.transaction() as db:
            if not db.execute("SELECT 1 FROM thing_groups WHERE name = ?", (group,)).fetchone():
                raise ApiError("ResourceNotFoundException", f"Thing group {group} cannot be found.", 404)
            if not db.execute("SELECT 1 FROM things WHERE name = ?", (thing,)).fetchone():
                raise ApiError("ResourceNotFoundException", f"Thing {thing} cannot be found.", 404)
            db.execute("INSERT OR IGNORE INTO group_members VALUES (?, ?)", (group, thing))
            # continuous jobs reach things that join a target group later
            group_arn = self._arn("thinggroup", group)
            for job in db.execute("SELECT * FROM jobs WHERE status = 'IN_PROGRESS'").fetchall():
                body_ = json.loads(job["body"])
                if body_.get("targetSelection") != "CONTINUOUS" or group_arn not in body_["targets"]:
                    continue
                if self._latest(db, job["job_id"], thing) is None:
                    before = self._snapshot(db, thing)
                    self._queue(db, job["job_id"], thing, at)
                    self._post(db, self._notifications(db, thing, before, at))
        return {}

    def remove_thing_from_group(self, body: dict) -> dict:
        group = self._name_from(body, "thingGroupName", "thingGroupArn")
        thing = self._name_from(body, "thingName", "thingArn")
        at = now()
        with self.store.transaction() as db:
            db.execute("DELETE FROM group_members WHERE group_name = ? AND thing = ?", (group, thing))
            # a thing leaving the group of a continuous job: its pending execution becomes REMOVED
            group_arn = self._arn("thinggroup", group)
            thing_arn = self._arn("thing", thing)
            for job in db.execute("SELECT * FROM jobs WHERE status = 'IN_PROGRESS'").fetchall():
                targets = json.loads(job["body"]).get("targets", [])
                if group_arn not in targets or thing_arn in targets:
                    continue
                row = self._latest(db, job["job_id"], thing)
                if row is not None and row["status"] in PENDING:
                    self._post(db, self._service_set(db, row, "REMOVED", at))
        return {}

    # ----- control plane: jobs ------------------------------------------------------------
    def _targets(self, db, targets) -> list:
        """Thing names for thing and thing-group ARNs (groups expanded now)."""
        if not isinstance(targets, list) or not targets:
            raise ApiError("InvalidRequestException", "targets must list at least one ARN")
        things: list = []
        for arn in targets:
            match = re.fullmatch(r"arn:aws:iot:[a-z0-9-]+:\d{12}:(thing|thinggroup)/(.+)", str(arn))
            if not match:
                raise ApiError("InvalidRequestException", f"target {arn!r} is not a thing or thing-group ARN")
            kind, name = match.groups()
            if kind == "thing":
                if not db.execute("SELECT 1 FROM things WHERE name = ?", (name,)).fetchone():
                    raise ApiError("ResourceNotFoundException", f"Thing {name} cannot be found.", 404)
                members = [name]
            else:
                if not db.execute("SELECT 1 FROM thing_groups WHERE name = ?", (name,)).fetchone():
                    raise ApiError("ResourceNotFoundException", f"Thing group {name} cannot be found.", 404)
                members = [
                    r["thing"]
                    for r in db.execute(
                        "SELECT thing FROM group_members WHERE group_name = ? ORDER BY rowid", (name,)
                    )
                ]
            things += [m for m in members if m not in things]
        return things

    def _check_job_body(self, job_id: str, body: dict) -> str:
        """Validate CreateJob; return the document text to store."""
        if not JOB_ID.match(job_id or ""):
            raise ApiError("InvalidRequestException", f"jobId {job_id!r} must match [a-zA-Z0-9_-]{{1,64}}")
        document = body.get("document")
        template_arn = body.get("jobTemplateArn")
        parameters = body.get("documentParameters")
        sources = [k for k in ("document", "documentSource", "jobTemplateArn") if body.get(k)]
        if len(sources) != 1:
            raise ApiError(
                "InvalidRequestException", "give exactly one of document, documentSource, jobTemplateArn"
            )
        if parameters is not None and not template_arn:
            raise ApiError(
                "InvalidRequestException", "Document parameters are only supported for managed job templates"
            )
        if template_arn:
            try:
                document = templates.render(template_arn, parameters or {})
            except templates.TemplateError as err:
                raise ApiError(err.error_type, str(err), err.status) from None
        elif body.get("documentSource"):
            document = self._fetch_source(body["documentSource"])
        if not isinstance(document, str) or len(document) > 32768:
            raise ApiError("InvalidRequestException", "document must be a JSON string of at most 32768 chars")
        try:
            parsed = json.loads(document)
        except ValueError:
            raise ApiError("InvalidRequestException", "document is not valid JSON") from None
        if not isinstance(parsed, dict):
            raise ApiError("InvalidRequestException", "document must be a JSON object")
        presigned = body.get("presignedUrlConfig")
        if "${aws:iot:s3-presigned-url:" in document and not presigned:
            raise ApiError(
                "InvalidRequestException",
                "presignedUrlConfig is required when the document has a presigned URL placeholder",
            )
        if presigned is not None:
            expires = presigned.get("expiresInSec", 3600)
            if not isinstance(expires, int) or not 60 <= expires <= 3600:
                raise ApiError("InvalidRequestException", "presignedUrlConfig.expiresInSec must be 60-3600")
        selection = body.get("targetSelection", "SNAPSHOT")
        if selection not in ("SNAPSHOT", "CONTINUOUS"):
            raise ApiError("InvalidRequestException", "targetSelection must be SNAPSHOT or CONTINUOUS")
        timeout = (body.get("timeoutConfig") or {}).get("inProgressTimeoutInMinutes")
        if timeout is not None and (not isinstance(timeout, int) or not 1 <= timeout <= MAX_STEP_MINUTES):
            raise ApiError("InvalidRequestException", "inProgressTimeoutInMinutes must be 1-10080")
        retry = body.get("jobExecutionsRetryConfig")
        if retry is not None:
            criteria = retry.get("criteriaList")
            if not isinstance(criteria, list) or not 1 <= len(criteria) <= 2:
                raise ApiError("InvalidRequestException", "criteriaList must have 1 or 2 entries")
            for criterion in criteria:
                if criterion.get("failureType") not in ("FAILED", "TIMED_OUT", "ALL"):
                    raise ApiError("InvalidRequestException", "failureType must be FAILED, TIMED_OUT or ALL")
                retries = criterion.get("numberOfRetries")
                if not isinstance(retries, int) or not 0 <= retries <= 10:
                    raise ApiError("InvalidRequestException", "numberOfRetries must be 0-10")
        if body.get("description") is not None and len(str(body["description"])) > 2028:
            raise ApiError("InvalidRequestException", "description is longer than 2028 chars")
        return document

    def _fetch_source(self, url: str) -> str:
        from tools.standin import files

        match = _S3_URL.match(url)
        if not match:
            raise ApiError("InvalidRequestException", f"documentSource {url!r} is not an S3 URL")
        try:
            return files.read_text(self.settings, match.group(2))
        except OSError:
            raise ApiError("InvalidRequestException", f"documentSource {url} cannot be read") from None

    def create_job(self, job_id: str, body: dict) -> dict:
        document = self._check_job_body(job_id, body)
        at = now()
        body = {k: v for k, v in body.items() if k not in ("document",) and v is not None}
        body.setdefault("targetSelection", "SNAPSHOT")
        with self.store.transaction() as db:
            if self._job(db, job_id) is not None:
                raise ApiError("ResourceAlreadyExistsException", f"Job {job_id} already exists.", 409)
            things = self._targets(db, body.get("targets"))
            db.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, 'IN_PROGRESS', 0, NULL, NULL, ?, ?, NULL)",
                (job_id, _json(body), document, at, at),
            )
            for thing in things:
                before = self._snapshot(db, thing)
                self._queue(db, job_id, thing, at)
                self._post(db, self._notifications(db, thing, before, at))
            if not things:
                self._maybe_complete(db, job_id, at)
        return _prune(
            {"jobArn": self._arn("job", job_id), "jobId": job_id, "description": body.get("description")}
        )

    def _require_job(self, db, job_id: str):
        job = self._job(db, job_id)
        if job is None:
            raise ApiError("ResourceNotFoundException", f"Job {job_id} cannot be found.", 404)
        return job

    def describe_job(self, job_id: str) -> dict:
        db = self.store.read()
        job = self._require_job(db, job_id)
        body = json.loads(job["body"])
        counts = dict.fromkeys(ALL_STATUSES, 0)
        for row in db.execute(
            "SELECT status, COUNT(*) AS n FROM executions e WHERE job_id = ? AND execution_number = "
            "(SELECT MAX(execution_number) FROM executions WHERE job_id = e.job_id AND thing = e.thing) "
            "GROUP BY status",
            (job_id,),
        ):
            counts[row["status"]] = row["n"]
        names = {
            "CANCELED": "numberOfCanceledThings",
            "SUCCEEDED": "numberOfSucceededThings",
            "FAILED": "numberOfFailedThings",
            "REJECTED": "numberOfRejectedThings",
            "QUEUED": "numberOfQueuedThings",
            "IN_PROGRESS": "numberOfInProgressThings",
            "REMOVED": "numberOfRemovedThings",
            "TIMED_OUT": "numberOfTimedOutThings",
        }
        details = {names[s]: n for s, n in counts.items()}
        keep = (
            "targets", "description", "presignedUrlConfig", "jobExecutionsRolloutConfig", "abortConfig",
            "timeoutConfig", "namespaceId", "jobTemplateArn", "jobExecutionsRetryConfig",
            "documentParameters", "schedulingConfig", "destinationPackageVersions",
        )  # fmt: skip
        described = {
            "jobArn": self._arn("job", job_id),
            "jobId": job_id,
            "targetSelection": body.get("targetSelection", "SNAPSHOT"),
            "status": job["status"],
            "forceCanceled": bool(job["force_canceled"]),
            "reasonCode": job["reason_code"],
            "comment": job["comment"],
            "createdAt": job["created"],
            "lastUpdatedAt": job["updated"],
            "completedAt": job["completed"],
            "jobProcessDetails": details,
            "isConcurrent": False,
        }
        described.update({k: body[k] for k in keep if k in body})
        return _prune({"documentSource": body.get("documentSource"), "job": _prune(described)})

    def get_job_document(self, job_id: str, before_substitution: bool = False) -> dict:
        with self.store.transaction() as db:
            job = self._require_job(db, job_id)
            if before_substitution:
                body = json.loads(job["body"])
                if body.get("jobTemplateArn"):
                    return {"document": templates.raw(body["jobTemplateArn"])}
                return {"document": job["document"]}
            return {"document": self.render_document(db, job)}

    def list_jobs(self, status=None, target_selection=None, group=None) -> dict:
        rows = self.store.read().execute("SELECT * FROM jobs ORDER BY created DESC").fetchall()
        result = []
        for job in rows:
            body = json.loads(job["body"])
            if status and job["status"] != status:
                continue
            if target_selection and body.get("targetSelection") != target_selection:
                continue
            if group and self._arn("thinggroup", group) not in body.get("targets", []):
                continue
            result.append(
                _prune(
                    {
                        "jobArn": self._arn("job", job["job_id"]),
                        "jobId": job["job_id"],
                        "targetSelection": body.get("targetSelection", "SNAPSHOT"),
                        "status": job["status"],
                        "createdAt": job["created"],
                        "lastUpdatedAt": job["updated"],
                        "completedAt": job["completed"],
                        "isConcurrent": False,
                    }
                )
            )
        return {"jobs": result}

    def cancel_job(self, job_id: str, body: dict | None = None, force: bool = False) -> dict:
        body = body or {}
        reason = body.get("reasonCode")
        if reason is not None and not re.fullmatch(r"[A-Z0-9_]{1,128}", str(reason)):
            raise ApiError("InvalidRequestException", "reasonCode must match [A-Z0-9_]+ (at most 128)")
        at = now()
        with self.store.transaction() as db:
            job = self._require_job(db, job_id)
            if job["status"] == "COMPLETED":
                raise ApiError("InvalidStateTransitionException", f"Job {job_id} is already COMPLETED", 409)
            if job["status"] == "CANCELED" and not force:
                raise ApiError("InvalidStateTransitionException", f"Job {job_id} is already CANCELED", 409)
            db.execute(
                "UPDATE jobs SET status = 'CANCELED', force_canceled = ?, reason_code = ?, comment = ?, "
                "updated = ?, completed = ? WHERE job_id = ?",
                (1 if force else 0, reason, body.get("comment"), at, at, job_id),
            )
            wanted = PENDING if force else ("QUEUED",)
            rows = [
                r
                for r in db.execute("SELECT * FROM executions WHERE job_id = ? ORDER BY seq", (job_id,))
                if r["status"] in wanted
            ]
            for row in rows:
                self._post(db, self._service_set(db, row, "CANCELED", at, force=force))
        return _prune(
            {
                "jobArn": self._arn("job", job_id),
                "jobId": job_id,
                "description": json.loads(job["body"]).get("description"),
            }
        )

    def delete_job(self, job_id: str, force: bool = False) -> dict:
        at = now()
        with self.store.transaction() as db:
            self._require_job(db, job_id)
            pending = db.execute(
                "SELECT * FROM executions WHERE job_id = ? AND status IN ('QUEUED', 'IN_PROGRESS')",
                (job_id,),
            ).fetchall()
            if pending and not force:
                raise ApiError(
                    "InvalidStateTransitionException",
                    f"Job {job_id} has executions that are not terminal; use force",
                    409,
                )
            things = {r["thing"] for r in pending}
            befores = {t: self._snapshot(db, t) for t in things}
            db.execute("DELETE FROM executions WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))
            for thing in sorted(things):
                self._post(db, self._notifications(db, thing, befores[thing], at))
        return {}

    def _control_execution(self, row) -> dict:
        details = json.loads(row["status_details"]) if row["status_details"] else {}
        return _prune(
            {
                "jobId": row["job_id"],
                "status": row["status"],
                "forceCanceled": bool(row["force_canceled"]),
                "statusDetails": {"detailsMap": details},
                "thingArn": self._arn("thing", row["thing"]),
                "queuedAt": row["queued_at"],
                "startedAt": row["started_at"],
                "lastUpdatedAt": row["last_updated_at"],
                "executionNumber": row["execution_number"],
                "versionNumber": row["version"],
                "approximateSecondsBeforeTimedOut": self._remaining(row, now()),
            }
        )

    def describe_job_execution(self, job_id: str, thing: str, number=None) -> dict:
        row = self._latest(self.store.read(), job_id, thing, number)
        if row is None:
            raise ApiError(
                "ResourceNotFoundException", f"Job execution of {job_id} on {thing} cannot be found.", 404
            )
        return {"execution": self._control_execution(row)}

    def cancel_job_execution(self, job_id: str, thing: str, body: dict | None = None, force=False) -> dict:
        body = body or {}
        details = body.get("statusDetails")
        if details is not None:
            try:
                check_status_details(details, int(self.settings["status_details_max_pairs"]))
            except Rejected as err:
                raise ApiError("InvalidRequestException", err.message) from None
        at = now()
        with self.store.transaction() as db:
            row = self._latest(db, job_id, thing)
            if row is None:
                raise ApiError(
                    "ResourceNotFoundException", f"Job execution of {job_id} on {thing} cannot be found.", 404
                )
            expected = body.get("expectedVersion")
            if expected is not None and int(expected) != row["version"]:
                raise ApiError(
                    "VersionConflictException",
                    f"Expected version {expected} but found version {row['version']}",
                    409,
                )
            if row["status"] in TERMINAL:
                raise ApiError(
                    "InvalidStateTransitionException", f"Job execution is already {row['status']}", 409
                )
            if row["status"] == "IN_PROGRESS" and not force:
                raise ApiError(
                    "InvalidStateTransitionException",
                    "Cannot cancel an IN_PROGRESS job execution without force",
                    409,
                )
            self._post(db, self._service_set(db, row, "CANCELED", at, details, force=force))
        return {}

    @staticmethod
    def _control_summary(row) -> dict:
        return _prune(
            {
                "status": row["status"],
                "queuedAt": row["queued_at"],
                "startedAt": row["started_at"],
                "lastUpdatedAt": row["last_updated_at"],
                "executionNumber": row["execution_number"],
                "retryAttempt": row["retry_attempt"],
            }
        )

    def list_executions_for_job(self, job_id: str, status=None) -> dict:
        db = self.store.read()
        self._require_job(db, job_id)
        rows = db.execute("SELECT * FROM executions WHERE job_id = ? ORDER BY seq", (job_id,)).fetchall()
        return {
            "executionSummaries": [
                {"thingArn": self._arn("thing", r["thing"]), "jobExecutionSummary": self._control_summary(r)}
                for r in rows
                if not status or r["status"] == status
            ]
        }

    def list_executions_for_thing(self, thing: str, status=None, job_id=None) -> dict:
        rows = (
            self.store.read()
            .execute("SELECT * FROM executions WHERE thing = ? ORDER BY seq", (thing,))
            .fetchall()
        )
        return {
            "executionSummaries": [
                {"jobId": r["job_id"], "jobExecutionSummary": self._control_summary(r)}
                for r in rows
                if (not status or r["status"] == status) and (not job_id or r["job_id"] == job_id)
            ]
        }

    def executions(self) -> list:
        """Every latest execution (for `watch`): dicts with job, thing, status, details, times."""
        rows = self.store.read().execute(
            "SELECT * FROM executions e WHERE execution_number = (SELECT MAX(execution_number) "
            "FROM executions WHERE job_id = e.job_id AND thing = e.thing) ORDER BY seq"
        )
        return [dict(r) for r in rows]


def classify(topic: str):
    """(kind, thing, job_id) for a request topic; ("invalid", ...) for an unknown one; None to ignore.

    Classified by level count first (§13), so a job named `get` or `notify` cannot be confused
    with GetPending or a notification.
    """
    levels = topic.split("/")
    if len(levels) < 5 or levels[0] != "$aws" or levels[1] != "things" or levels[3] != "jobs":
        return None
    thing = levels[2]
    if levels[-1] in ("accepted", "rejected"):
        return None  # a response (ours)
    if len(levels) == 5:
        if levels[4] in ("notify", "notify-next"):
            return None
        if levels[4] in ("get", "start-next"):
            return levels[4], thing, None
    elif len(levels) == 6 and (JOB_ID.match(levels[4]) or levels[4] == "$next"):
        if levels[5] == "get":
            return "describe", thing, levels[4]
        if levels[5] == "update" and levels[4] != "$next":
            return "update", thing, levels[4]
    return "invalid", thing, None
