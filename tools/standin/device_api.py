"""The device side of the Jobs API: requests on `$aws/things/<thing>/jobs/...`, timers, outbox.

`DeviceApi.handle(topic, payload)` answers one request with the messages AWS would publish
(the response, then `notify`, then `notify-next`); `expire()` runs the step and in-progress
timers; the outbox holds notifications the control plane caused until the service publishes
them. The HTTPS Jobs data plane (`iot-jobs-data`) is answered through the same `handle`.
"""

import json
import re

from tools.standin.core import (
    DEVICE_STATUSES,
    JOB_ID,
    MAX_STEP_MINUTES,
    TERMINAL,
    JobState,
    Rejected,
    check_status_details,
    parsed,
    prune,
    to_json,
)
from tools.standin.store import now


def _as_int(value, name: str, lo: int | None = None, hi: int | None = None, allow=()):
    """A number sent as a JSON number or a numeric string, as AWS accepts; InvalidRequest otherwise."""
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


class DeviceApi(JobState):
    """Answers devices; runs the timers; hands the outbox to the service."""

    @staticmethod
    def _state(row) -> dict:
        """executionState, as VersionMismatch and InvalidStateTransition carry it."""
        details = json.loads(row["status_details"]) if row["status_details"] else None
        return prune(
            {"status": row["status"], "statusDetails": details or None, "versionNumber": row["version"]}
        )

    # ----- device requests -----------------------------------------------------------------
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
                    to_json(details) if details is not None else None,
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
        minutes = parsed(job["body"]).get("timeoutConfig", {}).get("inProgressTimeoutInMinutes")
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
                to_json(details) if details is not None else None,
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

    # ----- timers and the outbox (run by the Jobs service) ---------------------------------
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


def classify(topic: str):
    """(kind, thing, job_id) for a request topic; ("invalid", ...) for an unknown one; None to ignore.

    Classified by level count first, so a job named `get` or `notify` cannot be confused
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
