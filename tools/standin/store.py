"""The stand-in's state in one SQLite file, shared by the Jobs service and the control plane.

Both processes open the same file (WAL mode); every change runs in a `BEGIN IMMEDIATE`
transaction so a restart of either loses nothing and they never see half an update.
"""

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS things (
    name TEXT PRIMARY KEY, thing_id TEXT, type_name TEXT, attributes TEXT, version INTEGER,
    created REAL);
CREATE TABLE IF NOT EXISTS thing_groups (
    name TEXT PRIMARY KEY, group_id TEXT, description TEXT, created REAL);
CREATE TABLE IF NOT EXISTS group_members (
    group_name TEXT, thing TEXT, PRIMARY KEY (group_name, thing));
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, body TEXT, document TEXT, status TEXT, force_canceled INTEGER,
    reason_code TEXT, comment TEXT, created REAL, updated REAL, completed REAL);
CREATE TABLE IF NOT EXISTS executions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT, thing TEXT, execution_number INTEGER,
    status TEXT, status_details TEXT, queued_at REAL, started_at REAL, last_updated_at REAL,
    version INTEGER, step_deadline REAL, progress_deadline REAL, force_canceled INTEGER,
    retry_attempt INTEGER, retry_cause TEXT,
    UNIQUE (job_id, thing, execution_number));
CREATE INDEX IF NOT EXISTS executions_by_thing ON executions (thing, status);
CREATE INDEX IF NOT EXISTS executions_by_job ON executions (job_id, status);
CREATE INDEX IF NOT EXISTS executions_by_deadline ON executions (status, step_deadline,
    progress_deadline);
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT, payload TEXT);
CREATE TABLE IF NOT EXISTS presigned (token TEXT PRIMARY KEY, path TEXT, expires REAL);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS streams (
    stream_id TEXT PRIMARY KEY, version INTEGER, description TEXT, files TEXT, role_arn TEXT,
    created REAL, updated REAL);
CREATE TABLE IF NOT EXISTS ota_updates (
    ota_id TEXT PRIMARY KEY, body TEXT, status TEXT, job_id TEXT, stream_id TEXT, made_stream INTEGER,
    error TEXT, created REAL, updated REAL);
CREATE TABLE IF NOT EXISTS retained (topic TEXT PRIMARY KEY, payload BLOB, qos INTEGER, modified REAL);
CREATE TABLE IF NOT EXISTS connectivity (
    thing TEXT PRIMARY KEY, client_id TEXT, connected INTEGER, stamp REAL, reason TEXT,
    source_ip TEXT, source_port INTEGER, keepalive INTEGER, clean_session INTEGER);
"""

# What AWS leaves open (docs/protocol.md, "Open choices": the numbers below) and the
# fault-injection knobs, with defaults.
DEFAULTS = {
    # fast clock: how many real seconds one "minute" of a timer lasts
    "minute_seconds": 60.0,
    # open choice 1: the code for an update of a terminal execution (InvalidStateTransition or
    # TerminalStateReached)
    "update_terminal_code": "InvalidStateTransition",
    # open choice 2: reject describe of a terminal execution with TerminalStateReached (AWS normally answers)
    "describe_terminal_rejects": False,
    # open choice 3: versionNumber increment on a service-side change (cancel, timeout)
    "service_version_bump": 1,
    # open choice 4: may a device set CANCELED by update
    "device_may_cancel": False,
    # open choice 5: statusDetails replace (False) or merge (True); max pairs
    "status_details_merge": False,
    "status_details_max_pairs": 10,
    # open choice 6: zero-length payload: "InvalidJson" or "empty-object" (treated as {})
    "empty_payload": "InvalidJson",
    # open choice 7: start-next on an IN_PROGRESS head applies a new stepTimeoutInMinutes
    "start_next_rearms_step_timer": False,
    # at most this many executions in get/accepted and notify (AWS: 10, 15 with scheduling)
    "pending_list_limit": 10,
    # fault injection
    "throttle_every": 0,  # every Nth request is rejected with RequestThrottled (0: off)
    "internal_error_rate": 0.0,  # probability of InternalError per request
    "duplicate_responses": False,  # every response and notification is published twice
    "response_delay": 0.0,  # seconds before a response is published
    "refuse_terminal_updates": [],  # job ids whose every terminal update is refused InvalidRequest
    # where the stand-in listens, kept so the next `up` reuses them (a provisioned device keeps
    # working): ports (0: a free one at the next start) and the extra address, besides loopback,
    # that a chip on the local network dials ("": loopback only)
    "mqtt_port": 0,
    "control_port": 0,
    "host": "",
    # host name put in presigned URLs (the endpoint: the server certificate covers it)
    "files_host": "localhost",
    "files_port": 0,
    "files_folder": "",
    "region": "us-east-1",
    "account": "123456789012",
}


def now() -> float:
    return time.time()


class Store:
    """Thread-safe access to the state file: one connection per thread."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self._connection().executescript(_SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    @contextmanager
    def transaction(self):
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def read(self) -> sqlite3.Connection:
        return self._connection()

    def settings(self) -> dict:
        values = dict(DEFAULTS)
        for row in self.read().execute("SELECT key, value FROM settings"):
            values[row["key"]] = json.loads(row["value"])
        return values

    def set(self, **values) -> None:
        unknown = sorted(set(values) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(unknown)}")
        with self.transaction() as db:
            for key, value in values.items():
                db.execute(
                    "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, json.dumps(value))
                )

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
