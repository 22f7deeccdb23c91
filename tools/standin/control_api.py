"""The control plane's operations (`iot` as boto3 calls it): things, groups, jobs, executions.

Served over HTTP by `control.py` and used in-process by `StandIn` and the CLI. Notifications a
change causes are written to the outbox in the same transaction; the Jobs service publishes them.
"""

import json
import re
import secrets

from tools.standin import templates
from tools.standin.core import (
    ALL_STATUSES,
    JOB_ID,
    MAX_STEP_MINUTES,
    PENDING,
    S3_URL,
    TERMINAL,
    THING_NAME,
    ApiError,
    JobState,
    Rejected,
    check_status_details,
    prune,
    to_json,
)
from tools.standin.store import now

_TARGET = re.compile(r"arn:aws:iot:([a-z0-9-]+):(\d{12}):(thing|thinggroup)/(.+)")


class ControlApi(JobState):
    """The `iot` operations on things, groups, jobs and executions."""

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
                    (name, thing_id, body.get("thingTypeName"), to_json(attributes), now()),
                )
        return {"thingName": name, "thingArn": self.arn("thing", name), "thingId": thing_id}

    def describe_thing(self, name: str) -> dict:
        row = self.store.read().execute("SELECT * FROM things WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise ApiError("ResourceNotFoundException", f"Thing {name} cannot be found.", 404)
        return prune(
            {
                "defaultClientId": name,
                "thingName": name,
                "thingId": row["thing_id"],
                "thingArn": self.arn("thing", name),
                "thingTypeName": row["type_name"],
                "attributes": json.loads(row["attributes"]),
                "version": row["version"],
            }
        )

    def list_things(self) -> dict:
        rows = self.store.read().execute("SELECT * FROM things ORDER BY name").fetchall()
        return {
            "things": [
                prune(
                    {
                        "thingName": r["name"],
                        "thingTypeName": r["type_name"],
                        "thingArn": self.arn("thing", r["name"]),
                        "attributes": json.loads(r["attributes"]),
                        "version": r["version"],
                    }
                )
                for r in rows
            ]
        }

    def get_thing_connectivity_data(self, name: str) -> dict:
        """GetThingConnectivityData from the broker's connection log (`presence.py`)."""
        db = self.store.read()
        if not db.execute("SELECT 1 FROM things WHERE name = ?", (name,)).fetchone():
            raise ApiError("ResourceNotFoundException", f"Thing {name} cannot be found.", 404)
        row = db.execute("SELECT * FROM connectivity WHERE thing = ?", (name,)).fetchone()
        if row is None:
            return {"thingName": name, "connected": False}  # never connected: no session details
        return prune(
            {
                "thingName": name,
                "connected": bool(row["connected"]),
                "timestamp": row["stamp"],
                "disconnectReason": None if row["connected"] else row["reason"],
                "clientId": row["client_id"],
                "keepAliveDuration": row["keepalive"],
                "cleanSession": bool(row["clean_session"]),
            }
        )

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
            "thingGroupArn": self.arn("thinggroup", name),
            "thingGroupId": group_id,
        }

    def describe_thing_group(self, name: str) -> dict:
        row = self.store.read().execute("SELECT * FROM thing_groups WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise ApiError("ResourceNotFoundException", f"Thing group {name} cannot be found.", 404)
        return prune(
            {
                "thingGroupName": name,
                "thingGroupId": row["group_id"],
                "thingGroupArn": self.arn("thinggroup", name),
                "version": 1,
                "thingGroupProperties": prune({"thingGroupDescription": row["description"]}),
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
            group_arn = self.arn("thinggroup", group)
            for job in db.execute("SELECT * FROM jobs WHERE status = 'IN_PROGRESS'").fetchall():
                body_ = json.loads(job["body"])
                if body_.get("targetSelection") != "CONTINUOUS" or group_arn not in body_["targets"]:
                    continue
                if self._latest(db, job["job_id"], thing) is None:
                    before = self._snapshot(db, thing)
                    self._queue(db, job["job_id"], thing, at)
                    self.post(db, self._notifications(db, thing, before, at))
        return {}

    def remove_thing_from_group(self, body: dict) -> dict:
        group = self._name_from(body, "thingGroupName", "thingGroupArn")
        thing = self._name_from(body, "thingName", "thingArn")
        at = now()
        with self.store.transaction() as db:
            db.execute("DELETE FROM group_members WHERE group_name = ? AND thing = ?", (group, thing))
            # a thing leaving the group of a continuous job: its pending execution becomes REMOVED
            group_arn = self.arn("thinggroup", group)
            thing_arn = self.arn("thing", thing)
            for job in db.execute("SELECT * FROM jobs WHERE status = 'IN_PROGRESS'").fetchall():
                targets = json.loads(job["body"]).get("targets", [])
                if group_arn not in targets or thing_arn in targets:
                    continue
                row = self._latest(db, job["job_id"], thing)
                if row is not None and row["status"] in PENDING:
                    self.post(db, self._service_set(db, row, "REMOVED", at))
        return {}

    # ----- control plane: jobs ------------------------------------------------------------
    def _targets(self, db, targets) -> list:
        """Thing names for thing and thing-group ARNs (groups expanded now)."""
        if not isinstance(targets, list) or not targets:
            raise ApiError("InvalidRequestException", "targets must list at least one ARN")
        things: list = []
        region, account = self.settings["region"], self.settings["account"]
        for arn in targets:
            match = _TARGET.fullmatch(str(arn))
            if not match:
                raise ApiError("InvalidRequestException", f"target {arn!r} is not a thing or thing-group ARN")
            arn_region, arn_account, kind, name = match.groups()
            if (arn_region, arn_account) != (region, account):
                # AWS resolves targets in the caller's own account and region only
                raise ApiError(
                    "InvalidRequestException",
                    f"target {arn} is in region {arn_region}, account {arn_account}; this endpoint "
                    f"serves region {region}, account {account}",
                )
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

        match = S3_URL.match(url)
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
                (job_id, to_json(body), document, at, at),
            )
            for thing in things:
                before = self._snapshot(db, thing)
                self._queue(db, job_id, thing, at)
                self.post(db, self._notifications(db, thing, before, at))
            if not things:
                self._maybe_complete(db, job_id, at)
        return prune(
            {"jobArn": self.arn("job", job_id), "jobId": job_id, "description": body.get("description")}
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
            "jobArn": self.arn("job", job_id),
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
        return prune({"documentSource": body.get("documentSource"), "job": prune(described)})

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
            if group and self.arn("thinggroup", group) not in body.get("targets", []):
                continue
            result.append(
                prune(
                    {
                        "jobArn": self.arn("job", job["job_id"]),
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
                self.post(db, self._service_set(db, row, "CANCELED", at, force=force))
        return prune(
            {
                "jobArn": self.arn("job", job_id),
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
                self.post(db, self._notifications(db, thing, befores[thing], at))
        return {}

    # ----- control plane: executions ------------------------------------------------------
    def _control_execution(self, row) -> dict:
        details = json.loads(row["status_details"]) if row["status_details"] else {}
        return prune(
            {
                "jobId": row["job_id"],
                "status": row["status"],
                "forceCanceled": bool(row["force_canceled"]),
                "statusDetails": {"detailsMap": details},
                "thingArn": self.arn("thing", row["thing"]),
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
            self.post(db, self._service_set(db, row, "CANCELED", at, details, force=force))
        return {}

    @staticmethod
    def _control_summary(row) -> dict:
        return prune(
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
                {"thingArn": self.arn("thing", r["thing"]), "jobExecutionSummary": self._control_summary(r)}
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
