"""Streams and OTA updates on the control plane, as AWS IoT's `iot` API has them.

CreateStream / DescribeStream / ListStreams / UpdateStream / DeleteStream keep streams whose
files are S3 locations; the bucket is not kept, the key names a file of the stand-in's files
folder (as for presigned URLs). Each file's size and MD5 (the S3 ETag of a single-part upload)
are taken when the stream is created or updated: a file changed afterwards answers devices
`ETagMismatch`, as AWS does for an S3 object replaced under a stream.

CreateOTAUpdate makes what AWS makes: for the MQTT protocol a stream `AFR_OTA-<uuid>` of the
S3 files (or the stream the files name), and the job `AFR_OTA-<otaUpdateId>` whose document is

    {"afr_ota": {"protocols": ["MQTT"], "streamname": "AFR_OTA-…",
                 "files": [{"filepath": …, "filesize": …, "fileid": …, "certfile": …,
                            "fileType": …, "sig-sha256-ecdsa": "<base64 DER>"}]}}

with `update_data_url` (a presigned-URL placeholder) and `auth_scheme` per file for HTTP. The
signature is the user's (`customCodeSigning`) or made by the local profile (`signing.py`).
What AWS finds wrong only after accepting the request (a missing file, an unknown signing
profile, a target that does not exist) ends the update CREATE_FAILED with `errorInfo`, as there.
"""

import base64
import binascii
import json
import re
import uuid

from tools.standin import files
from tools.standin.control_api import ControlApi
from tools.standin.core import PENDING, ApiError, prune, to_json
from tools.standin.signing import PROFILE, LocalSigner
from tools.standin.store import now

RESOURCE_ID = re.compile(r"[a-zA-Z0-9_-]{1,128}\Z")
_OTA_JOB = "AFR_OTA-"
_MAX_STREAM_VERSION = 65535


class _Failed(Exception):
    """Why an accepted OTA update could not be created (errorInfo)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _page(items: list, max_results, next_token, limit: int = 250) -> tuple:
    try:
        start, size = int(next_token or 0), int(max_results or limit)
    except ValueError:
        raise ApiError("InvalidRequestException", "nextToken and maxResults must be numbers") from None
    if not 1 <= size <= limit:
        raise ApiError("InvalidRequestException", f"maxResults must be 1-{limit}")
    token = str(start + size) if start + size < len(items) else None
    return items[start : start + size], token


class OtaApi(ControlApi):
    """Streams and OTA updates; the OTA job itself is an ordinary CreateJob."""

    # ----- streams ---------------------------------------------------------------------------
    def _stream_files(self, given) -> list:
        """Validated stream files with the size and ETag of what their S3 keys name now."""
        if not isinstance(given, list) or not 1 <= len(given) <= 50:
            raise ApiError("InvalidRequestException", "files must list 1-50 stream files")
        seen, out = set(), []
        for entry in given:
            file_id = entry.get("fileId") if isinstance(entry, dict) else None
            if not isinstance(file_id, int) or isinstance(file_id, bool) or not 0 <= file_id <= 255:
                raise ApiError("InvalidRequestException", "each stream file needs a fileId of 0-255")
            if file_id in seen:
                raise ApiError("InvalidRequestException", f"fileId {file_id} is given twice")
            seen.add(file_id)
            location = entry.get("s3Location") or {}
            if not location.get("bucket") or not location.get("key"):
                raise ApiError("InvalidRequestException", f"file {file_id} needs s3Location bucket and key")
            path = self._s3_file(location)
            out.append(
                {
                    "fileId": file_id,
                    "s3Location": location,
                    "size": path.stat().st_size,
                    "etag": files.file_digest(path, "md5").hex(),
                }
            )
        return out

    def _s3_file(self, location: dict):
        try:
            return files.locate(self.settings, location["key"])
        except FileNotFoundError:
            raise ApiError(
                "ResourceNotFoundException",
                f"s3://{location['bucket']}/{location['key']} does not exist (the stand-in serves "
                f"S3 keys from {self.settings['files_folder']})",
                404,
            ) from None

    def _stream_row(self, db, stream_id: str):
        row = db.execute("SELECT * FROM streams WHERE stream_id = ?", (stream_id,)).fetchone()
        if row is None:
            raise ApiError("ResourceNotFoundException", f"Stream {stream_id} cannot be found.", 404)
        return row

    @staticmethod
    def _check_stream_fields(body: dict, creating: bool) -> None:
        description = body.get("description")
        if description is not None and (not isinstance(description, str) or len(description) > 2028):
            raise ApiError("InvalidRequestException", "description must be a string of at most 2028 chars")
        role = body.get("roleArn")
        if (creating or role is not None) and (not isinstance(role, str) or not 20 <= len(role) <= 2048):
            raise ApiError("InvalidRequestException", "roleArn must be an IAM role ARN (20-2048 chars)")

    def create_stream(self, stream_id: str, body: dict) -> dict:
        if not RESOURCE_ID.match(stream_id or ""):
            raise ApiError(
                "InvalidRequestException", f"streamId {stream_id!r} must match [a-zA-Z0-9_-]{{1,128}}"
            )
        self._check_stream_fields(body, creating=True)
        stream_files = self._stream_files(body.get("files"))
        at = now()
        with self.store.transaction() as db:
            if db.execute("SELECT 1 FROM streams WHERE stream_id = ?", (stream_id,)).fetchone():
                raise ApiError("ResourceAlreadyExistsException", f"Stream {stream_id} already exists.", 409)
            db.execute(
                "INSERT INTO streams VALUES (?, 1, ?, ?, ?, ?, ?)",
                (stream_id, body.get("description"), to_json(stream_files), body["roleArn"], at, at),
            )
        return prune(
            {
                "streamId": stream_id,
                "streamArn": self.arn("stream", stream_id),
                "description": body.get("description"),
                "streamVersion": 1,
            }
        )

    def describe_stream(self, stream_id: str) -> dict:
        row = self._stream_row(self.store.read(), stream_id)
        return {
            "streamInfo": prune(
                {
                    "streamId": stream_id,
                    "streamArn": self.arn("stream", stream_id),
                    "streamVersion": row["version"],
                    "description": row["description"],
                    "files": [
                        {"fileId": f["fileId"], "s3Location": f["s3Location"]}
                        for f in json.loads(row["files"])
                    ],
                    "createdAt": row["created"],
                    "lastUpdatedAt": row["updated"],
                    "roleArn": row["role_arn"],
                }
            )
        }

    def list_streams(self, max_results=None, next_token=None, ascending: bool = False) -> dict:
        order = "ASC" if ascending else "DESC"
        rows = (
            self.store.read().execute(f"SELECT * FROM streams ORDER BY created {order}, stream_id").fetchall()
        )
        summaries = [
            prune(
                {
                    "streamId": r["stream_id"],
                    "streamArn": self.arn("stream", r["stream_id"]),
                    "streamVersion": r["version"],
                    "description": r["description"],
                }
            )
            for r in rows
        ]
        page, token = _page(summaries, max_results, next_token)
        return prune({"streams": page, "nextToken": token})

    def update_stream(self, stream_id: str, body: dict) -> dict:
        self._check_stream_fields(body, creating=False)
        stream_files = self._stream_files(body["files"]) if body.get("files") is not None else None
        with self.store.transaction() as db:
            row = self._stream_row(db, stream_id)
            version = row["version"] + 1
            if version > _MAX_STREAM_VERSION:
                raise ApiError("LimitExceededException", f"Stream {stream_id} reached version 65535", 410)
            description = body.get("description", row["description"])
            db.execute(
                "UPDATE streams SET version = ?, description = ?, files = ?, role_arn = ?, updated = ? "
                "WHERE stream_id = ?",
                (
                    version,
                    description,
                    to_json(stream_files) if stream_files is not None else row["files"],
                    body.get("roleArn") or row["role_arn"],
                    now(),
                    stream_id,
                ),
            )
        return prune(
            {
                "streamId": stream_id,
                "streamArn": self.arn("stream", stream_id),
                "description": description,
                "streamVersion": version,
            }
        )

    def delete_stream(self, stream_id: str) -> dict:
        with self.store.transaction() as db:
            self._stream_row(db, stream_id)
            busy = db.execute(
                "SELECT o.ota_id FROM ota_updates o JOIN jobs j ON j.job_id = o.job_id "
                "WHERE o.stream_id = ? AND j.status = 'IN_PROGRESS'",
                (stream_id,),
            ).fetchone()
            if busy is not None:
                raise ApiError(
                    "DeleteConflictException",
                    f"Stream {stream_id} is used by OTA update {busy['ota_id']}, whose job is in progress",
                    409,
                )
            db.execute("DELETE FROM streams WHERE stream_id = ?", (stream_id,))
        return {}

    # ----- OTA updates -----------------------------------------------------------------------
    def signer(self) -> LocalSigner:
        """The local signing profile of this state folder (its key made on first use)."""
        state = self.store.path.parent
        pki = state / "broker" / "pki"
        return LocalSigner(state / "signing", pki / "ca.cert.pem", pki / "ca.key.pem")

    @staticmethod
    def _check_ota_request(ota_id: str, body: dict) -> list:
        if not RESOURCE_ID.match(ota_id or ""):
            raise ApiError(
                "InvalidRequestException", f"otaUpdateId {ota_id!r} must match [a-zA-Z0-9_-]{{1,128}}"
            )
        for key in ("targets", "files", "roleArn"):
            if not body.get(key):
                raise ApiError("InvalidRequestException", f"{key} is required")
        if not isinstance(body["targets"], list) or not isinstance(body["files"], list):
            raise ApiError("InvalidRequestException", "targets and files must be lists")
        protocols = body.get("protocols") or ["MQTT"]
        if (
            not isinstance(protocols, list)
            or not 1 <= len(protocols) <= 2
            or any(p not in ("MQTT", "HTTP") for p in protocols)
            or len(set(protocols)) != len(protocols)
        ):
            raise ApiError("InvalidRequestException", "protocols must be [MQTT], [HTTP] or [HTTP, MQTT]")
        if body.get("targetSelection", "SNAPSHOT") not in ("SNAPSHOT", "CONTINUOUS"):
            raise ApiError("InvalidRequestException", "targetSelection must be SNAPSHOT or CONTINUOUS")
        description = body.get("description")
        if description is not None and (not isinstance(description, str) or len(description) > 2028):
            raise ApiError("InvalidRequestException", "description must be a string of at most 2028 chars")
        for entry in body["files"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("fileLocation"), dict):
                raise ApiError(
                    "InvalidRequestException", "each file needs a fileLocation (stream or s3Location)"
                )
            file_type = entry.get("fileType", 0)
            if not isinstance(file_type, int) or isinstance(file_type, bool) or not 0 <= file_type <= 255:
                raise ApiError("InvalidRequestException", "fileType must be 0-255")
        return protocols

    def create_ota_update(self, ota_id: str, body: dict) -> dict:
        protocols = self._check_ota_request(ota_id, body)
        at = now()
        with self.store.transaction() as db:
            if db.execute("SELECT 1 FROM ota_updates WHERE ota_id = ?", (ota_id,)).fetchone():
                raise ApiError("ResourceAlreadyExistsException", f"OTA update {ota_id} already exists.", 409)
            db.execute(
                "INSERT INTO ota_updates VALUES (?, ?, 'CREATE_PENDING', NULL, NULL, 0, NULL, ?, ?)",
                (ota_id, to_json(body), at, at),
            )
        stream_id = made = None
        try:
            entries, s3_files, stream_id = self._ota_files(body["files"], protocols)
            if "MQTT" in protocols and stream_id is None:
                stream_id, made = f"{_OTA_JOB}{uuid.uuid4()}", True
                self.create_stream(
                    stream_id,
                    {
                        "files": [{"fileId": i, "s3Location": loc} for i, loc in enumerate(s3_files)],
                        "roleArn": body["roleArn"],
                        "description": f"OTA update {ota_id}",
                    },
                )
            document = {"afr_ota": prune({"protocols": protocols, "streamname": stream_id, "files": entries})}
            job = self._ota_job(ota_id, body, document, "HTTP" in protocols)
        except (_Failed, ApiError) as err:
            if made:
                self.delete_stream(stream_id)
            code = err.code if isinstance(err, _Failed) else err.error_type
            with self.store.transaction() as db:
                db.execute(
                    "UPDATE ota_updates SET status = 'CREATE_FAILED', error = ?, updated = ? "
                    "WHERE ota_id = ?",
                    (to_json({"code": code, "message": err.message}), now(), ota_id),
                )
            return {"otaUpdateId": ota_id, "otaUpdateArn": self.arn("otaupdate", ota_id),
                    "otaUpdateStatus": "CREATE_PENDING"}  # fmt: skip
        with self.store.transaction() as db:
            db.execute(
                "UPDATE ota_updates SET status = 'CREATE_COMPLETE', job_id = ?, stream_id = ?, "
                "made_stream = ?, updated = ? WHERE ota_id = ?",
                (job, stream_id, int(bool(made)), now(), ota_id),
            )
        return {
            "otaUpdateId": ota_id,
            "awsIotJobId": job,
            "otaUpdateArn": self.arn("otaupdate", ota_id),
            "awsIotJobArn": self.arn("job", job),
            "otaUpdateStatus": "CREATE_PENDING",
        }

    def _ota_files(self, given: list, protocols: list) -> tuple:
        """(document file entries, S3 locations in order, the stream the files name or None)."""
        entries, s3_files, streams = [], [], set()
        for index, entry in enumerate(given):
            where = entry["fileLocation"]
            if where.get("stream"):
                stream_id = where["stream"].get("streamId")
                file_id = where["stream"].get("fileId", 0)
                try:
                    row = self._stream_row(self.store.read(), stream_id)
                except ApiError:
                    raise _Failed(
                        "ResourceNotFoundException", f"Stream {stream_id} cannot be found."
                    ) from None
                match = next((f for f in json.loads(row["files"]) if f["fileId"] == file_id), None)
                if match is None:
                    raise _Failed("ResourceNotFoundException", f"Stream {stream_id} has no file {file_id}")
                streams.add(stream_id)
                location = match["s3Location"]
            elif where.get("s3Location"):
                location, file_id = where["s3Location"], index
            else:
                raise _Failed(
                    "InvalidRequestException", f"file {index}: fileLocation names no stream and no S3 object"
                )
            try:
                path = self._s3_file(location)
            except ApiError as err:
                raise _Failed("ResourceNotFoundException", err.message) from None
            s3_files.append(location)
            file_entry = {
                "filepath": entry.get("fileName") or location["key"],
                "filesize": path.stat().st_size,
                "fileid": file_id,
                "certfile": None,
                "fileType": entry.get("fileType", 0),
            }
            if "HTTP" in protocols:
                file_entry["update_data_url"] = (
                    f"${{aws:iot:s3-presigned-url:https://s3.amazonaws.com/{location['bucket']}/{location['key']}}}"
                )
                file_entry["auth_scheme"] = "aws.s3.presigned"
            file_entry.update(self._signature(entry.get("codeSigning"), path))
            entries.append(prune(file_entry))
        if len(streams) > 1:
            raise _Failed("InvalidRequestException", "all files of an OTA update must come from one stream")
        if streams and any("stream" not in (e["fileLocation"] or {}) for e in given):
            raise _Failed("InvalidRequestException", "files from a stream and from S3 cannot be mixed")
        return entries, s3_files, (streams.pop() if streams else None)

    def _signature(self, signing, path) -> dict:
        """certfile and `sig-<hash>-<algorithm>` for the job document."""
        if not signing:
            return {}
        custom = signing.get("customCodeSigning")
        if custom:
            raw = (custom.get("signature") or {}).get("inlineDocument")
            if not raw:
                raise _Failed("InvalidRequestException", "customCodeSigning needs signature.inlineDocument")
            hash_name = str(custom.get("hashAlgorithm") or "SHA256").lower()
            algorithm = str(custom.get("signatureAlgorithm") or "ECDSA").lower()
            return {
                "certfile": (custom.get("certificateChain") or {}).get("certificateName"),
                f"sig-{hash_name}-{algorithm}": _signature_text(raw),
            }
        start = signing.get("startSigningJobParameter")
        if start:
            profile = start.get("signingProfileName")
            if profile != PROFILE:
                raise _Failed(
                    "ResourceNotFoundException",
                    f"signing profile {profile!r} does not exist here: without AWS Signer the stand-in "
                    f"signs with its local profile {PROFILE!r}",
                )
            certfile = (start.get("signingProfileParameter") or {}).get("certificatePathOnDevice")
            return {
                "certfile": certfile or "code-signing.cert.pem",
                "sig-sha256-ecdsa": self.signer().sign(path),
            }
        if signing.get("awsSignerJobId"):
            raise _Failed("ResourceNotFoundException", "AWS Signer jobs do not exist in the stand-in")
        return {}

    def _ota_job(self, ota_id: str, body: dict, document: dict, http: bool) -> str:
        job_id = _OTA_JOB + ota_id
        job: dict = {
            "targets": body["targets"],
            "document": json.dumps(document, separators=(",", ":")),
            "description": body.get("description"),
            "targetSelection": body.get("targetSelection", "SNAPSHOT"),
        }
        timeout = (body.get("awsJobTimeoutConfig") or {}).get("inProgressTimeoutInMinutes")
        if timeout:
            job["timeoutConfig"] = {"inProgressTimeoutInMinutes": timeout}
        if body.get("awsJobExecutionsRolloutConfig"):
            job["jobExecutionsRolloutConfig"] = body["awsJobExecutionsRolloutConfig"]
        if http:
            expires = (body.get("awsJobPresignedUrlConfig") or {}).get("expiresInSec") or 1800
            job["presignedUrlConfig"] = {"roleArn": body["roleArn"], "expiresInSec": int(expires)}
        self.create_job(job_id, prune(job))
        return job_id

    def _ota_row(self, db, ota_id: str):
        row = db.execute("SELECT * FROM ota_updates WHERE ota_id = ?", (ota_id,)).fetchone()
        if row is None:
            raise ApiError("ResourceNotFoundException", f"OTA update {ota_id} cannot be found.", 404)
        return row

    def get_ota_update(self, ota_id: str) -> dict:
        row = self._ota_row(self.store.read(), ota_id)
        body = json.loads(row["body"])
        info = {
            "otaUpdateId": ota_id,
            "otaUpdateArn": self.arn("otaupdate", ota_id),
            "creationDate": row["created"],
            "lastModifiedDate": row["updated"],
            "description": body.get("description"),
            "targets": body["targets"],
            "protocols": body.get("protocols") or ["MQTT"],
            "awsJobExecutionsRolloutConfig": body.get("awsJobExecutionsRolloutConfig"),
            "awsJobPresignedUrlConfig": body.get("awsJobPresignedUrlConfig"),
            "targetSelection": body.get("targetSelection", "SNAPSHOT"),
            "otaUpdateFiles": body["files"],
            "otaUpdateStatus": row["status"],
            "awsIotJobId": row["job_id"],
            "awsIotJobArn": self.arn("job", row["job_id"]) if row["job_id"] else None,
            "errorInfo": json.loads(row["error"]) if row["error"] else None,
            "additionalParameters": body.get("additionalParameters"),
        }
        return {"otaUpdateInfo": prune(info)}

    def list_ota_updates(self, status=None, max_results=None, next_token=None) -> dict:
        rows = self.store.read().execute("SELECT * FROM ota_updates ORDER BY created DESC").fetchall()
        summaries = [
            {
                "otaUpdateId": r["ota_id"],
                "otaUpdateArn": self.arn("otaupdate", r["ota_id"]),
                "creationDate": r["created"],
            }
            for r in rows
            if not status or r["status"] == status
        ]
        page, token = _page(summaries, max_results, next_token)
        return prune({"otaUpdates": page, "nextToken": token})

    def delete_ota_update(
        self, ota_id: str, delete_stream: bool = False, force_delete_job: bool = False
    ) -> dict:
        row = self._ota_row(self.store.read(), ota_id)
        if row["job_id"] and self._job(self.store.read(), row["job_id"]) is not None:
            pending = (
                self.store.read()
                .execute(
                    "SELECT 1 FROM executions WHERE job_id = ? AND status IN (?, ?) LIMIT 1",
                    (row["job_id"], *PENDING),
                )
                .fetchone()
            )
            if pending and not force_delete_job:
                raise ApiError(
                    "InvalidRequestException",
                    f"the job {row['job_id']} of OTA update {ota_id} has executions in progress: "
                    "give forceDeleteAWSJob to delete it anyway",
                )
            self.delete_job(row["job_id"], force=True)
        if delete_stream and row["stream_id"]:
            try:
                self.delete_stream(row["stream_id"])
            except ApiError as err:
                if err.error_type != "ResourceNotFoundException":
                    raise
        with self.store.transaction() as db:
            db.execute("DELETE FROM ota_updates WHERE ota_id = ?", (ota_id,))
        return {}


def _signature_text(raw) -> str:
    """The signature as the job document carries it: base64 of the DER signature.

    The API's inlineDocument is a blob: clients send base64 of what they were given. A user who
    gave the base64 text (as AWS's guide shows) sent base64 of that text; one who gave the raw
    DER bytes sent base64 of those. Either way the document gets base64 of the DER bytes.
    """
    data = base64.b64decode(raw) if isinstance(raw, str) else bytes(raw)
    try:
        text = data.decode("ascii").strip()
        der = base64.b64decode(text, validate=True)
        if der[:1] == b"\x30":  # a DER SEQUENCE: the text was base64 of the signature
            return text
    except (UnicodeDecodeError, binascii.Error, ValueError):
        pass
    return base64.b64encode(data).decode()
