"""What the device API and the control plane share: one store, the execution state machine.

Both sides (`device_api.DeviceApi`, the MQTT requests and timers; `control_api.ControlApi`,
things, groups, jobs and executions) change executions through the helpers here, so a version
bump, a retry, a job's completion and the notifications a change causes are written once.
Every change runs in one transaction and yields the MQTT messages it causes, in the order AWS
sends them: the response first, then `notify`, then `notify-next`.
"""

import functools
import json
import re
import secrets
import time
import unicodedata
from urllib.parse import quote

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
S3_URL = re.compile(r"https://s3(?:[.-][a-z0-9-]+)?\.amazonaws\.com/([^/]+)/(.+)\Z")


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


def to_json(payload: dict) -> str:
    return json.dumps(payload, separators=(",", ":"))


def _stamp(value):
    return None if value is None else int(value)


@functools.lru_cache(maxsize=4096)
def parsed(text: str):
    """JSON text parsed once (job bodies and documents are immutable; callers never mutate)."""
    return json.loads(text)


def prune(obj: dict) -> dict:
    """AWS omits absent fields instead of sending null."""
    return {k: v for k, v in obj.items() if v is not None}


def check_status_details(details, max_pairs: int = 10) -> dict:
    """statusDetails rules: flat string map, <= 10 pairs, key pattern, 1-1024 chars, no \\p{C}."""
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


class JobState:
    """The shared Jobs state over a Store. Thread-safe (each call is one transaction)."""

    def __init__(self, store: Store):
        self.store = store
        self.settings = store.settings()

    def refresh_settings(self) -> dict:
        self.settings = self.store.settings()
        return self.settings

    # ----- ARNs ---------------------------------------------------------------------------
    def arn(self, kind: str, name: str) -> str:
        return f"arn:aws:iot:{self.settings['region']}:{self.settings['account']}:{kind}/{name}"

    # ----- documents ----------------------------------------------------------------------
    def _presign(self, db, url: str, expires_in: int, at: float) -> str:
        match = S3_URL.match(url)
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
            expires = int(parsed(job["body"]).get("presignedUrlConfig", {}).get("expiresInSec", 3600))
            at = now() if at is None else at

            def fresh(match):
                url = self._presign(db, match.group(1), expires, at)
                return json.dumps(url)[1:-1]

            text = _PRESIGNED.sub(fresh, text)
        return text

    def _document_object(self, db, job, at):
        if "${aws:iot:s3-presigned-url:" not in job["document"]:
            return parsed(job["document"])  # the same text on every delivery: parse it once
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
        return prune(
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
        return prune(
            {
                "jobId": row["job_id"],
                "queuedAt": _stamp(row["queued_at"]),
                "startedAt": _stamp(row["started_at"]),
                "lastUpdatedAt": _stamp(row["last_updated_at"]),
                "versionNumber": row["version"],
                "executionNumber": row["execution_number"],
            }
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

    # ----- notifications -------------------------------------------------------------------
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
        return JobState._head(db, thing), fingerprint

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

    # ----- terminal states, retries, job completion ---------------------------------------
    def _after_terminal(self, db, row, job, at: float) -> None:
        status = row["status"]
        if status in ("FAILED", "TIMED_OUT") and job["status"] == "IN_PROGRESS":
            criteria = parsed(job["body"]).get("jobExecutionsRetryConfig", {}).get("criteriaList", [])
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
        if parsed(job["body"]).get("targetSelection", "SNAPSHOT") != "SNAPSHOT":
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
                to_json(details) if details else None,
                1 if force else row["force_canceled"],
                row["seq"],
            ),
        )
        job = self._job(db, row["job_id"])
        self._after_terminal(db, self._get(db, row["seq"]), job, at)
        return self._notifications(db, row["thing"], before, at)

    # ----- outbox: notifications caused by the control plane ------------------------------
    @staticmethod
    def post(db, messages) -> None:
        """Queue notifications for the Jobs service to publish (same transaction as the change)."""
        db.executemany(
            "INSERT INTO outbox (topic, payload) VALUES (?, ?)",
            [(topic, to_json(payload)) for topic, payload in messages],
        )
