# jobs.client: the AWS IoT Jobs MQTT API, one request at a time. MIT licence.
"""Requests to the Jobs service (get, describe, start-next, update) and the answers to them.

Every request carries a fresh clientToken and waits, with a deadline, for the accepted or
rejected answer carrying that token; answers with any other token are ignored and counted.
RequestThrottled / InternalError are retried with a bounded backoff (new token each try);
every other rejection is logged with its request and returned to the caller.

The client is the transport's message handler. Incoming messages are scanned in the
transport's buffer (jobs.scan); notify-next is recorded in `head` / `head_changed`; the job
document of an awaited start-next or describe answer is decoded at once (only when within
`max_document`), because the buffer is reused for the next message.
"""

import json
import time

from jobs import topics as T
from jobs.scan import ScanError

ACCEPTED = 1
REJECTED = 2
TIMEOUT = 3

_RETRYABLE = ("RequestThrottled", "InternalError")
_MAX_PAIRS = 10
_MAX_KEY = 128
_MAX_VALUE = 1024


def _key_char(c):
    return ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9") or c in ":_-"


def clean_details(details):
    """statusDetails AWS will accept: <= 10 pairs, keys 1-128 of [a-zA-Z0-9:_-], values
    1-1024 characters without control characters.

    Nothing fails: bad key characters become '_', keys are cut to 128; values that are not
    strings are converted with str(), control characters become spaces, values longer than
    1024 are cut to 1021 + "...", empty values become "-"; beyond ten pairs the rest are
    dropped ("reason" is always kept).
    """
    out = {}
    if not isinstance(details, dict):
        return out
    keys = list(details)
    if "reason" in details:  # dicts are unordered on MicroPython: the reason always survives
        keys.remove("reason")
        keys.insert(0, "reason")
    for k in keys:
        if len(out) >= _MAX_PAIRS:
            break
        key = "".join(c if _key_char(c) else "_" for c in str(k)[:_MAX_KEY])
        if not key or key in out:
            continue
        v = details[k]
        v = v if isinstance(v, str) else str(v)
        if len(v) > _MAX_VALUE:
            v = v[: _MAX_VALUE - 3] + "..."
        v = "".join(" " if (ord(c) < 32 or 127 <= ord(c) < 160) else c for c in v)
        out[key] = v or "-"
    return out


class Execution:
    """The job execution named in an accepted answer."""

    def __init__(self, f):
        self.job_id = f.job_id
        self.status = f.status
        self.version = f.version_number
        self.execution_number = f.execution_number
        self.doc = None
        self.doc_error = ""  # why the document cannot be used (too large, invalid)
        self.size = f.size


class Client:
    """One thing's Jobs API over a transport (jobs.mqtt.MQTT or anything with its interface)."""

    def __init__(self, link, topics, tokens, scanner, cfg, log=print):
        self.link = link
        self.topics = topics
        self.tokens = tokens
        self.scanner = scanner
        self.cfg = cfg  # read at each use: config.set changes the remotely settable keys
        self.log = log
        link.set_handler(self)
        # the awaited answer
        self._awaiting = None
        self._want_doc = False
        self._answer = 0
        self.code = None
        self.text = None
        self.execution = None
        self.state_status = None
        self.state_version = None
        # notify-next: (job_id, execution_number) of the head, None when nothing is pending
        self.head = None
        self.head_changed = False
        # counters
        self.unknown = 0  # messages on topics we do not act on
        self.bad = 0  # messages that are not valid JSON
        self._large_kind = 0
        self._large_error = None

    @property
    def timeout_ms(self):
        return self.cfg["request_timeout_ms"]

    @property
    def retries(self):
        return self.cfg["retries"]

    @property
    def retry_base_ms(self):
        return self.cfg["retry_base_ms"]

    @property
    def max_document(self):
        return self.cfg["max_document"]

    @property
    def ignored(self):
        """Answers whose clientToken was not outstanding."""
        return self.tokens.ignored

    # -- the transport's handler ------------------------------------------------------------

    def message(self, topic, payload):
        kind, _ = self.topics.classify(topic)
        if kind == T.UNKNOWN or kind == T.NOTIFY:
            self.unknown += 1
            return
        try:
            f = self.scanner.scan(payload, len(payload))
        except ScanError as e:
            self._invalid(kind, e)
            return
        self._dispatch(kind, f, payload)

    def large_begin(self, topic, size):
        kind, _ = self.topics.classify(topic)
        self._large_kind = kind
        self._large_error = None
        if kind != T.UNKNOWN:
            self.scanner.begin()

    def large_feed(self, chunk):
        if self._large_kind != T.UNKNOWN and self._large_error is None:
            try:
                self.scanner.feed(chunk)
            except ScanError as e:
                self._large_error = e

    def large_end(self):
        kind = self._large_kind
        if kind == T.UNKNOWN or kind == T.NOTIFY:
            self.unknown += 1
            return
        if self._large_error is None:
            try:
                f = self.scanner.end()
            except ScanError as e:
                self._large_error = e
        if self._large_error is not None:
            self._invalid(kind, self._large_error)
            return
        self._dispatch(kind, f, None)

    def _invalid(self, kind, error):
        self.bad += 1
        self.log("jobs: invalid JSON on topic kind", kind, "(" + str(error.kind) + ")")
        f = self.scanner.fields  # what the message named before the error
        if kind == T.NOTIFY_NEXT:
            # notify-next carries the document: one the scanner cannot read must not hide
            # that a job is next (start-next then answers it), unless it is the head we know
            job = f.job_id
            number = f.execution_number
            head = self.head
            if job and not (head is not None and head[0] == job and number is None):
                self.head = (job, number)
                self.head_changed = True
            return
        # an awaited answer whose document cannot be read: its execution is still answered
        # (FAILED with the reason), when the token and job id came before the problem
        token = f.client_token
        if (
            token is not None
            and token == self._awaiting
            and self._want_doc
            and kind in (T.START_NEXT_ACCEPTED, T.DESCRIBE_ACCEPTED)
            and f.job_id
        ):
            self.tokens.take(token)
            self._record(kind, f, None)
            ex = self.execution
            if ex is not None:
                ex.doc_error = "invalid JSON (" + str(error.kind) + ": " + str(error.why) + ")"

    def _dispatch(self, kind, f, payload):
        if kind == T.NOTIFY_NEXT:
            self.head = (f.job_id, f.execution_number) if f.has_execution else None
            self.head_changed = True
            return
        token = f.client_token
        if token is None or token != self._awaiting:
            self.tokens.take(token)  # counts it as ignored (awaited tokens are forgotten on timeout)
            return
        self.tokens.take(token)
        self._record(kind, f, payload)

    def _record(self, kind, f, payload):
        accepted = kind in (T.GET_ACCEPTED, T.START_NEXT_ACCEPTED, T.DESCRIBE_ACCEPTED, T.UPDATE_ACCEPTED)
        self._answer = ACCEPTED if accepted else REJECTED
        self.code = f.code
        self.text = f.message
        self.state_status = f.state_status
        self.state_version = f.state_version
        self.execution = None
        if accepted and f.has_execution and f.job_id:
            ex = Execution(f)
            self.execution = ex
            if self._want_doc:
                self._decode_document(ex, f, payload)

    def _decode_document(self, ex, f, payload):
        limit = self.max_document
        if f.truncated or payload is None:
            ex.doc_error = "document too large (" + str(f.size) + " > " + str(limit) + ")"
            return
        if f.document is None:
            ex.doc_error = "no job document"
            return
        start, end = f.document
        if end - start > limit:
            ex.doc_error = "document too large (" + str(end - start) + " > " + str(limit) + ")"
            return
        try:
            ex.doc = json.loads(bytes(payload[start:end]))
        except MemoryError:
            ex.doc_error = "document too large for free memory (" + str(end - start) + " bytes)"
        except ValueError:
            ex.doc_error = "invalid JSON"

    # -- requests ---------------------------------------------------------------------------

    def pump(self, ms):
        """Handle incoming traffic for `ms` (keeps the link alive while waiting)."""
        deadline = time.ticks_add(time.ticks_ms(), ms)
        while time.ticks_diff(deadline, time.ticks_ms()) > 0:
            self.link.wait(max(1, time.ticks_diff(deadline, time.ticks_ms())))

    def _exchange(self, topic, body, want_doc):
        token = self.tokens.new()
        payload = '{"clientToken":"' + token + '"' + body + "}"
        self._awaiting = token
        self._want_doc = want_doc
        self._answer = 0
        self.code = self.text = self.execution = None
        try:
            self.link.publish(topic, payload.encode(), qos=1)
            deadline = time.ticks_add(time.ticks_ms(), self.timeout_ms)
            while not self._answer:
                left = time.ticks_diff(deadline, time.ticks_ms())
                if left <= 0:
                    break
                self.link.wait(left)
        finally:
            self._awaiting = None
            if not self._answer:
                self.tokens.forget(token)
        return self._answer or TIMEOUT

    def call(self, what, topic, body="", want_doc=False):
        """One request with retries for throttling; ACCEPTED, REJECTED (self.code) or TIMEOUT."""
        attempt = 0
        while True:
            result = self._exchange(topic, body, want_doc)
            if result != REJECTED or self.code not in _RETRYABLE or attempt >= self.retries:
                break
            delay = self.retry_base_ms << attempt
            self.log("jobs:", what, "rejected", self.code, "- retry in", delay, "ms")
            self.pump(delay)
            attempt += 1
        if result == REJECTED:
            self.log("jobs:", what, "rejected:", self.code, self.text or "", "request:", body)
        elif result == TIMEOUT:
            self.log("jobs:", what, "no answer within", self.timeout_ms, "ms")
        return result

    def get_pending(self):
        return self.call("get", self.topics.get_pending())

    def describe(self, job_id="$next", execution_number=None, include_document=True):
        body = ""
        if execution_number is not None:
            body += ',"executionNumber":' + str(execution_number)
        body += ',"includeJobDocument":' + ("true" if include_document else "false")
        return self.call("describe " + job_id, self.topics.describe(job_id), body, include_document)

    def start_next(self, details=None, step_timeout=0):
        body = ""
        if details:
            body += ',"statusDetails":' + json.dumps(clean_details(details))
        if step_timeout:
            body += ',"stepTimeoutInMinutes":' + str(step_timeout)
        return self.call("start-next", self.topics.start_next(), body, True)

    def update(
        self,
        job_id,
        status,
        details=None,
        expected_version=None,
        execution_number=None,
        include_state=False,
        step_timeout=0,
    ):
        body = ',"status":"' + status + '"'
        if details:
            body += ',"statusDetails":' + json.dumps(clean_details(details))
        if expected_version is not None:
            body += ',"expectedVersion":' + str(expected_version)
        if execution_number is not None:
            body += ',"executionNumber":' + str(execution_number)
        if include_state:
            body += ',"includeJobExecutionState":true'
        if step_timeout:
            body += ',"stepTimeoutInMinutes":' + str(step_timeout)
        return self.call("update " + job_id + " " + status, self.topics.update(job_id), body)
