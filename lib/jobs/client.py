# jobs.client: the AWS IoT Jobs MQTT API, one request at a time. MIT licence.
"""Requests to the Jobs service (get, describe, start-next, update) and the answer to each.

    a = client.update("job-7", "SUCCEEDED", {"pin": "LED"}, expected_version=2)
    a.result                # ACCEPTED, REJECTED or TIMEOUT
    a.code, a.kind          # the rejected code and what it means (RETRY, GONE, STALE, REFUSED ...)
    a.execution             # the execution an accepted start-next / describe named, or None

Every request carries a fresh clientToken and waits, with a deadline, for the accepted or
rejected answer carrying that token; answers with any other token are ignored and counted.
RequestThrottled / InternalError are retried with backoff (a new token each try); every other
rejection is logged with its request and returned. Every statusDetails sent is built by
jobs.details, so it is valid AWS input whatever a job's document held.

The client is the transport's message handler. Incoming messages are scanned in the
transport's buffer (jobs.scan); notify-next is recorded in `head` / `head_changed`; the job
document of an awaited start-next or describe answer is decoded at once (only when within
`max_document`), because the buffer is reused for the next message. An AWS IoT OTA document
(`{"afr_ota": ...}`) is read by jobs.afrdoc into its few known fields, never into a tree.

`on_stream`, while set (by jobs.ops.stream during a download), is offered every message first:
`on_stream(topic, payload)` returns True for a message of the stream (payload None: larger than
the buffer), which is then not scanned.
"""

import json
import time

from micropython import const

from jobs import clock
from jobs import details as D
from jobs import topics as T
from jobs.scan import ScanError

ACCEPTED = const(1)
REJECTED = const(2)
TIMEOUT = const(3)

# what a rejected code means for the device; the one table of AWS's codes
OTHER = const(0)  # InvalidTopic and codes AWS may add: logged, the request is not repeated
RETRY = const(1)  # the service did not act on it: the same request may be sent again later
GONE = const(2)  # the execution is over (canceled, timed out, removed, finished)
STALE = const(3)  # VersionMismatch: describe, adopt the service's version, send once more
REFUSED = const(4)  # the request itself was refused (statusDetails, status): send it differently
MISSING = const(5)  # no such execution
_KINDS = {
    "RequestThrottled": RETRY,
    "InternalError": RETRY,
    "TerminalStateReached": GONE,
    "InvalidStateTransition": GONE,
    "VersionMismatch": STALE,
    "InvalidRequest": REFUSED,
    "InvalidJson": REFUSED,
    "ResourceNotFound": MISSING,
}

SOMETHING = ("", None)  # the head of a notify-next that was not scanned: not ours, not none
TERMINAL = ("SUCCEEDED", "FAILED", "REJECTED", "CANCELED", "TIMED_OUT", "REMOVED")
_SLICE_MS = const(1000)  # waits are cut into slices so the watchdog is fed


def kind_of(code):
    """What a rejected `code` means (RETRY, GONE, STALE, REFUSED, MISSING or OTHER)."""
    return _KINDS.get(code, OTHER)


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


class Answer:
    """The service's answer to one request."""

    def __init__(self, result, code=None, text=None, execution=None, state_status=None, state_version=None):
        self.result = result
        self.code = code
        self.text = text
        self.execution = execution
        self.state_status = state_status  # executionState of a rejected update / VersionMismatch
        self.state_version = state_version
        self.pending: list | None = None  # GetPending: [(job_id, execution_number)], in progress first

    @property
    def kind(self):
        return kind_of(self.code) if self.result == REJECTED else OTHER


_NO_ANSWER = Answer(TIMEOUT)


def _what(name, job):
    return name if job is None else name + " " + job


def _afr_first(view):
    """True when the JSON object in `view` starts with the key "afr_ota" (as CreateOTAUpdate
    writes its documents), so no tree of it is ever built."""
    i = _blank(view, 0)
    if i >= len(view) or view[i] != 123:
        return False
    return bytes_at(view, _blank(view, i + 1), b'"afr_ota"')


def bytes_at(view, i, text):
    """True when view[i:] starts with the bytes `text` (a memoryview is not compared to bytes on
    every port)."""
    if len(view) - i < len(text):
        return False
    for k in range(len(text)):
        if view[i + k] != text[k]:
            return False
    return True


def _blank(view, i):
    while i < len(view) and view[i] in b" \t\r\n":
        i += 1
    return i


def _pending(payload):
    """[(job_id, execution_number)] of a GetPending answer (at most 10 + 10 summaries, so it
    is decoded whole; asked only on the rare path past an execution given up on)."""
    try:
        d = json.loads(bytes(payload))
    except (ValueError, MemoryError):
        return None
    out = []
    for key in ("inProgressJobs", "queuedJobs"):
        for s in d.get(key) or ():
            if isinstance(s, dict) and isinstance(s.get("jobId"), str):
                n = s.get("executionNumber")
                out.append((s["jobId"], n if isinstance(n, int) else None))
    return out


class Client:
    """One thing's Jobs API over a transport (jobs.mqtt.MQTT or anything with its interface).

    `feed()`, when given, is called while a request waits (the board's watchdog)."""

    def __init__(self, link, topics, tokens, scanner, cfg, log=print, feed=None):
        self.link = link
        self.topics = topics
        self.tokens = tokens
        self.scanner = scanner
        self.cfg = cfg  # read at each use: config.set changes the remotely settable keys
        self.log = log
        self.feed = feed
        link.set_handler(self)
        self._awaiting = None  # clientToken of the request in flight
        self._await_kind = 0  # its accepted answer's topic kind (rejected is one more)
        self._await_job = None  # the job id in its answer topic (update, describe)
        self._want_doc = False
        self._answer = None
        # notify-next: (job_id, execution_number) of the head, None when nothing is pending
        self.head = None
        self.head_changed = False
        # False while the engine claims: a notify-next then only says "something changed"
        # (start-next is answering it) and is not scanned
        self.want_heads = True
        self._large_kind = 0
        self._large_job = None
        self._large_error = None
        self.on_stream = None  # handler(topic, payload) -> bool of a stream download in progress

    @property
    def ignored(self):
        """Answers whose clientToken was not outstanding."""
        return self.tokens.ignored

    # -- the transport's handler ------------------------------------------------------------

    def message(self, topic, payload):
        if self.on_stream is not None and self.on_stream(topic, payload):
            return
        kind, job = self.topics.classify(topic)
        if kind == T.UNKNOWN or kind == T.NOTIFY:
            return
        if kind == T.NOTIFY_NEXT and not self.want_heads:
            self.head = SOMETHING
            self.head_changed = True
            return
        try:
            f = self.scanner.scan(payload, len(payload))
        except ScanError as e:
            self._invalid(kind, e)
            return
        self._dispatch(kind, job, f, payload)

    def large_begin(self, topic, size):
        if self.on_stream is not None and self.on_stream(topic, None):
            self._large_kind = T.UNKNOWN
            return
        kind, job = self.topics.classify(topic)
        if kind == T.NOTIFY_NEXT and not self.want_heads:
            self.head = SOMETHING
            self.head_changed = True
            kind = T.UNKNOWN
        self._large_kind = kind
        self._large_job = job
        self._large_error = None
        if kind != T.UNKNOWN:
            self.scanner.begin()

    def large_feed(self, chunk):
        if self._large_kind != T.UNKNOWN:
            self.scanner.feed(chunk)

    def large_end(self):
        kind = self._large_kind
        if kind == T.UNKNOWN or kind == T.NOTIFY:
            return
        try:
            f = self.scanner.end()
        except ScanError as e:
            self._invalid(kind, e)
            return
        self._dispatch(kind, self._large_job, f, None)

    def _invalid(self, kind, error):
        """A message the scanner refused; its fields up to the problem are in scanner.fields."""
        self.log("jobs: invalid JSON on topic kind", kind, "(" + str(error.kind) + ")")
        f = self.scanner.fields
        if kind == T.NOTIFY_NEXT:
            # notify-next carries the document: one the scanner cannot read must not hide
            # that a job is next (start-next then answers it), unless it is the head we know
            head = self.head
            if f.job_id and not (head is not None and head[0] == f.job_id and f.execution_number is None):
                self.head = (f.job_id, f.execution_number)
                self.head_changed = True
            return
        # an awaited answer whose document cannot be read: its execution is still answered
        # (REJECTED with the reason), when the token and job id came before the problem
        token = f.client_token
        if (
            token is not None
            and token == self._awaiting
            and self._want_doc
            and (kind == T.START_NEXT_ACCEPTED or kind == T.DESCRIBE_ACCEPTED)
            and f.job_id
        ):
            self.tokens.take(token)
            f.has_execution = True
            f.code = f.message = f.state_status = f.state_version = None
            answer = self._record(kind, f, None, False)
            if answer.execution is not None:
                answer.execution.doc_error = "invalid JSON (" + str(error.kind) + ": " + str(error.why) + ")"
            self._answer = answer

    def _dispatch(self, kind, job, f, payload):
        if kind == T.NOTIFY_NEXT:
            self.head = (f.job_id, f.execution_number) if f.has_execution else None
            self.head_changed = True
            return
        token = f.client_token
        if token is None or token != self._awaiting:
            if token is None and f.code == "InvalidJson" and self._awaits(kind, job):
                # a payload the service could not read comes back without its token, on the
                # request's own rejected topic: that is the answer, not someone else's
                self._answer = self._record(kind, f, payload, False)
                return
            self.tokens.take(token)  # counts it as ignored (awaited tokens are forgotten on timeout)
            return
        self.tokens.take(token)
        self._answer = self._record(kind, f, payload, self._want_doc)

    def _awaits(self, kind, job):
        return self._awaiting is not None and kind == self._await_kind + 1 and job == self._await_job

    def _record(self, kind, f, payload, want_doc):
        accepted = kind == self._await_kind
        ex = None
        if accepted and f.has_execution and f.job_id:
            ex = Execution(f)
            if want_doc:
                self._decode_document(ex, f, payload)
        answer = Answer(ACCEPTED if accepted else REJECTED, f.code, f.message, ex, f.state_status, f.state_version)
        if accepted and kind == T.GET_ACCEPTED and payload is not None:
            answer.pending = _pending(payload)
        return answer

    def _decode_document(self, ex, f, payload):
        limit = self.cfg["max_document"]
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
            view = payload[start:end]  # a memoryview: no copy (json.loads takes any buffer since v1.23)
            afr = _afr_first(view)
            if not afr:
                doc = json.loads(view)
                afr = isinstance(doc, dict) and "afr_ota" in doc
            if afr:  # an AWS IoT OTA document: its few fields, never a tree
                doc = None
                from jobs import afrdoc

                try:
                    doc = afrdoc.parse(view)
                except afrdoc.Invalid as error:
                    ex.doc_error = error.args[0]
                    return
            ex.doc = doc
        except MemoryError:
            ex.doc_error = "document too large for free memory (" + str(end - start) + " bytes)"
        except ValueError:
            ex.doc_error = "invalid JSON"

    # -- requests ---------------------------------------------------------------------------

    def pump(self, ms):
        """Handle incoming traffic for `ms` (keeps the link alive while waiting)."""
        deadline = time.ticks_add(time.ticks_ms(), ms)
        while True:
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                return
            if self.feed is not None:
                self.feed()
            self.link.wait(min(left, _SLICE_MS))

    def _exchange(self, topic, body, want_doc, kind, job):
        token = self.tokens.new()
        self._awaiting = token
        self._await_kind = kind
        self._await_job = job
        self._want_doc = want_doc
        self._answer = None
        try:
            self.link.publish(topic, b'{"clientToken":"' + token.encode() + b'"' + body + b"}", qos=1)
            deadline = time.ticks_add(time.ticks_ms(), self.cfg["request_timeout_ms"])
            while self._answer is None:
                left = time.ticks_diff(deadline, time.ticks_ms())
                if left <= 0:
                    break
                if self.feed is not None:
                    self.feed()
                self.link.wait(min(left, _SLICE_MS))
        finally:
            self._awaiting = None
            if self._answer is None:
                self.tokens.forget(token)
        answer = self._answer
        self._answer = None
        return answer or _NO_ANSWER

    def call(self, name, topic, body=b"", want_doc=False, kind=0, job=None):
        """One request (`name` and `job` for the log), retried while the service answers
        RequestThrottled / InternalError."""
        cfg = self.cfg
        attempt = 0
        while True:
            answer = self._exchange(topic, body, want_doc, kind, job)
            if answer.kind != RETRY or attempt >= cfg["retries"]:
                break
            base = cfg["retry_base_ms"]
            delay = clock.backoff_ms(attempt, base, base << cfg["retries"])
            self.log("jobs:", _what(name, job), "rejected", answer.code, "- retry in", delay, "ms")
            self.pump(delay)
            attempt += 1
        if answer.result == REJECTED:
            request = str(body, "utf-8")
            self.log("jobs:", _what(name, job), "rejected:", answer.code, answer.text or "", "request:", request)
        elif answer.result == TIMEOUT:
            self.log("jobs:", _what(name, job), "no answer within", cfg["request_timeout_ms"], "ms")
        return answer

    def get_pending(self):
        return self.call("get", self.topics.get_pending(), b"", False, T.GET_ACCEPTED)

    def describe(self, job_id="$next", execution_number=None, include_document=True):
        body = b""
        if execution_number is not None:
            body += b',"executionNumber":' + str(execution_number).encode()
        body += b',"includeJobDocument":true' if include_document else b',"includeJobDocument":false'
        return self.call("describe", self.topics.describe(job_id), body, include_document, T.DESCRIBE_ACCEPTED, job_id)

    def start_next(self, details=None, step_timeout=0):
        body = self._details(details)
        if step_timeout:
            body += b',"stepTimeoutInMinutes":' + str(step_timeout).encode()
        return self.call("start-next", self.topics.start_next(), body, True, T.START_NEXT_ACCEPTED)

    def update(self, job_id, status, details=None, expected_version=None, execution_number=None,
               include_state=False, step_timeout=0):  # fmt: skip
        """UpdateJobExecution. `details`: a dict (encoded by jobs.details) or the bytes
        jobs.details.encode() made of one."""
        body = b',"status":"' + status.encode() + b'"' + self._details(details)
        if expected_version is not None:
            body += b',"expectedVersion":' + str(expected_version).encode()
        if execution_number is not None:
            body += b',"executionNumber":' + str(execution_number).encode()
        if include_state:
            body += b',"includeJobExecutionState":true'
        if step_timeout:
            body += b',"stepTimeoutInMinutes":' + str(step_timeout).encode()
        return self.call("update", self.topics.update(job_id), body, False, T.UPDATE_ACCEPTED, job_id)

    def _details(self, details):
        if not details:
            return b""
        if not isinstance(details, bytes):
            details = D.encode(details, self.cfg["max_details"])
        return b',"statusDetails":' + details if details != b"{}" else b""
