# fakejobs: an in-process Jobs service and link for fast engine tests. MIT licence.
"""A MicroPython stand-in for "broker + Jobs service" used where MQTT would be too slow
(the 1,000-cycle memory test) or where a test needs exact control of delivery order.

`FakeLink` has the transport's interface (publish, wait, set_handler, reconnect, close,
connected, connects). A request published to it is answered by `FakeService` as AWS IoT
Jobs answers it (docs/protocol.md); answers are queued and delivered by `wait()` through the
handler's `message()` from a preallocated buffer (or `large_*` in chunks when larger).
"""

import json
import time

from jobs.mqtt import LinkDown

TERMINAL = ("SUCCEEDED", "FAILED", "REJECTED", "CANCELED", "TIMED_OUT", "REMOVED")


class FakeService:
    def __init__(self, thing):
        self.prefix = "$aws/things/" + thing + "/jobs/"
        self.executions = []
        self.faults = {}  # op -> list of codes to answer next
        self.silent = False
        self.requests = 0
        self.updates = []  # (job_id, status, details) of accepted updates, when `record`
        self.record = True
        self.keep = 4  # finished executions kept (memory stays flat)
        self.notify_first = False  # deliver notifications before the answer that caused them

    def create(self, job_id, doc):
        n = 1 + sum(1 for e in self.executions if e["job_id"] == job_id)
        before = self.head()
        self.executions.append(
            {"job_id": job_id, "status": "QUEUED", "version": 1, "number": n, "doc": doc, "details": None}
        )
        return self._notify(before)

    def cancel(self, job_id):
        before = self.head()
        e = self.find(job_id)
        e["status"] = "CANCELED"
        e["version"] += 1
        return self._notify(before)

    def find(self, job_id, number=None):
        found = None
        for e in self.executions:
            if e["job_id"] == job_id and (number is None or e["number"] == number):
                found = e
        return found

    def head(self):
        for status in ("IN_PROGRESS", "QUEUED"):
            for e in self.executions:
                if e["status"] == status:
                    return e
        return None

    def status(self, job_id):
        e = self.find(job_id)
        return e and e["status"]

    def execution(self, e, doc=True):
        out = {"jobId": e["job_id"], "status": e["status"], "queuedAt": 1700000000}
        if e["details"]:
            out["statusDetails"] = e["details"]
        out["versionNumber"] = e["version"]
        out["executionNumber"] = e["number"]
        if doc:
            out["jobDocument"] = e["doc"]
        return out

    def notify_next(self, e):
        body = {"timestamp": 1700000001}
        if e is not None:
            body["execution"] = self.execution(e)
        return (self.prefix + "notify-next", body)

    def _notify(self, before):
        after = self.head()
        if before is after:
            return []
        return [self.notify_next(after)]

    def _trim(self):
        done = [e for e in self.executions if e["status"] in TERMINAL]
        while len(done) > self.keep:
            self.executions.remove(done.pop(0))

    def answer(self, topic, payload):
        """[(topic, body)] answering one request."""
        self.requests += 1
        if self.silent:
            return []
        rest = topic[len(self.prefix) :].split("/")
        req = json.loads(payload)
        token = req.get("clientToken")
        if rest == ["start-next"]:
            op, job_id = "start-next", None
        elif rest == ["get"]:
            op, job_id = "get", None
        elif len(rest) == 2 and rest[1] == "get":
            op, job_id = "describe", rest[0]
        else:
            op, job_id = "update", rest[0]
        out = []

        def reply(body, ok=True, state=None):
            body["timestamp"] = 1700000002
            if token is not None:
                body["clientToken"] = token
            if state is not None:
                body["executionState"] = {"status": state["status"], "versionNumber": state["version"]}
            out.append((topic + ("/accepted" if ok else "/rejected"), body))
            return out

        faults = self.faults.get(op)
        if faults:
            code = faults.pop(0)
            return reply({"code": code, "message": "injected"}, False)
        if op == "get":
            lists = {"IN_PROGRESS": [], "QUEUED": []}
            for e in self.executions:
                if e["status"] in lists:
                    summary = {"jobId": e["job_id"], "queuedAt": 1700000000}
                    summary["versionNumber"] = e["version"]
                    summary["executionNumber"] = e["number"]
                    lists[e["status"]].append(summary)
            return reply({"inProgressJobs": lists["IN_PROGRESS"], "queuedJobs": lists["QUEUED"]})
        if op == "start-next":
            e = self.head()
            if e is None:
                return reply({})
            if e["status"] == "QUEUED":
                e["status"] = "IN_PROGRESS"
                e["version"] += 1
            return reply({"execution": self.execution(e)})
        if op == "describe":
            e = self.head() if job_id == "$next" else self.find(job_id, req.get("executionNumber"))
            if e is None:
                if job_id == "$next":
                    return reply({})
                return reply({"code": "ResourceNotFound", "message": "no such job"}, False)
            return reply({"execution": self.execution(e, req.get("includeJobDocument", True))})
        e = self.find(job_id, req.get("executionNumber"))
        if e is None:
            return reply({"code": "ResourceNotFound", "message": "no such job"}, False)
        expected = req.get("expectedVersion")
        if expected is not None and expected != e["version"]:
            return reply({"code": "VersionMismatch", "message": "version"}, False, e)
        if e["status"] in TERMINAL:
            return reply({"code": "InvalidStateTransition", "message": "terminal"}, False, e)
        before = self.head()
        e["status"] = req["status"]
        e["version"] += 1
        if "statusDetails" in req:
            e["details"] = req["statusDetails"]
        if self.record:
            self.updates.append((job_id, req["status"], req.get("statusDetails")))
        reply({})
        notes = self._notify(before)
        if self.notify_first:
            out[:0] = notes
        else:
            out.extend(notes)
        self._trim()
        return out


class FakeLink:
    def __init__(self, service, buffer_size=8192):
        self.service = service
        self.buf = bytearray(buffer_size)
        self.mv = memoryview(self.buf)
        self.tbuf = bytearray(256)
        self.tmv = memoryview(self.tbuf)
        self.queue = []
        self.handler = None
        self.connected = False
        self.connects = 0
        self.published = 0
        self.telemetry = None
        self.fail_publish = 0  # the next n publishes raise LinkDown

    def set_handler(self, handler):
        self.handler = handler

    def reconnect(self, subscriptions, lo, hi, tries=0, idle=None):
        self.connected = True
        self.connects += 1

    def close(self):
        self.connected = False
        self.queue = []

    def push(self, items):
        """Queue (topic, body) pairs for delivery; body: dict or bytes."""
        for topic, body in items:
            self.queue.append((topic, body if isinstance(body, bytes) else json.dumps(body).encode()))

    def publish(self, topic, msg, retain=False, qos=0):
        if not self.connected:
            raise LinkDown("not connected")
        if self.fail_publish:
            self.fail_publish -= 1
            self.connected = False
            raise LinkDown("injected link loss")
        self.published += 1
        topic = topic.decode() if isinstance(topic, bytes) else topic
        if topic.startswith("logi2/"):
            self.telemetry = msg
            return 0
        self.push(self.service.answer(topic, msg))
        return 1

    def wait(self, ms):
        if not self.connected:
            raise LinkDown("not connected")
        if not self.queue:
            if ms > 0:
                time.sleep_ms(min(ms, 2))
            return False
        topic, payload = self.queue.pop(0)
        t = topic.encode()
        self.tbuf[: len(t)] = t
        topic_mv = self.tmv[: len(t)]
        n = len(payload)
        if n <= len(self.buf):
            self.buf[:n] = payload
            self.handler.message(topic_mv, self.mv[:n])
        else:
            self.handler.large_begin(topic_mv, n)
            for i in range(0, n, len(self.buf)):
                k = min(len(self.buf), n - i)
                self.buf[:k] = payload[i : i + k]
                self.handler.large_feed(self.mv[:k])
            self.handler.large_end()
        return True
