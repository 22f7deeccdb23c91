"""A small scripted AWS IoT Jobs responder, only for what the real service cannot produce.

Device tests run against the local AWS IoT stand-in (tools/standin, the `standin` resource). This
double stays for the few cases the stand-in must not or cannot do: a job document far over AWS's
32 KiB limit (test_big_payload), codes a well-formed request never gets (InvalidJson/InvalidTopic
by injection), answers with someone else's clientToken or none, raw payloads of any size on any
topic (test_mqtt), and what devices publish to logi2/device/<thing> (telemetry, not Jobs).

It connects to the test broker as the `jobs-service` identity and answers the reserved
`$aws/things/<thing>/jobs/...` topics as AWS IoT Jobs does (docs/protocol.md: start-next,
$next and <jobId> describe, get, update, notify-next on head change, rejected error codes).
Tests drive it over a line-oriented TCP control port: one JSON object per line in, one out.

Commands: create {thing, job_id, doc | pad}, inject {thing, op, code, count},
publish {topic, payload | size}, state {thing}, telemetry {thing}, reset {thing}.
"""

import json
import socket
import threading
import time

import paho.mqtt.client as mqtt

TERMINAL = ("SUCCEEDED", "FAILED", "REJECTED", "CANCELED", "TIMED_OUT", "REMOVED")
DEVICE_STATUSES = ("IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED")
KEY_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_-")


def _key(execution):
    return None if execution is None else (execution["job_id"], execution["execution_number"])


class Thing:
    def __init__(self):
        self.executions: list[dict] = []
        self.faults: dict[str, list] = {}
        self.telemetry: list[str] = []


class Responder:
    def __init__(self, port: int, pki):
        self.port = port
        self.pki = pki
        self.things: dict[str, Thing] = {}
        self.lock = threading.RLock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="jobs-service")
        self.client.tls_set(
            ca_certs=str(pki / "ca.cert.pem"),
            certfile=str(pki / "jobs-service.cert.pem"),
            keyfile=str(pki / "jobs-service.key.pem"),
        )
        self.client.on_message = self._on_message
        self._control = socket.create_server(("127.0.0.1", 0))
        self.control_port = self._control.getsockname()[1]
        self._subscribed = threading.Event()

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> "Responder":
        self.client.on_subscribe = lambda *a, **k: self._subscribed.set()
        self.client.connect("localhost", self.port, keepalive=60)
        # answers are small: without TCP_NODELAY each one waits ~40 ms for a delayed ACK
        self.client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.subscribe([("$aws/things/+/jobs/#", 1), ("logi2/device/+", 0)])
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("jobs responder: no SUBACK from the broker")
        threading.Thread(target=self._control_loop, daemon=True).start()
        return self

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
        self._control.close()

    # -- helpers ------------------------------------------------------------------------
    def thing(self, name: str) -> Thing:
        return self.things.setdefault(name, Thing())

    @staticmethod
    def _pending(t: Thing) -> list[dict]:
        running = [e for e in t.executions if e["status"] == "IN_PROGRESS"]
        queued = [e for e in t.executions if e["status"] == "QUEUED"]
        return running + queued

    def _head(self, t: Thing):
        pending = self._pending(t)
        return pending[0] if pending else None

    @staticmethod
    def _execution(e: dict, document: bool = True) -> dict:
        out = {"jobId": e["job_id"], "status": e["status"]}
        if e["details"]:
            out["statusDetails"] = e["details"]
        out.update(queuedAt=e["queued_at"], lastUpdatedAt=e["updated_at"])
        if e.get("started_at"):
            out["startedAt"] = e["started_at"]
        out.update(versionNumber=e["version"], executionNumber=e["execution_number"])
        if document:
            out["jobDocument"] = e["doc"]
        return out

    def _publish(self, topic: str, body: dict) -> None:
        self.client.publish(topic, json.dumps(body, separators=(",", ":")), qos=1)

    def _notify_head(self, name: str, before) -> None:
        t = self.thing(name)
        after = self._head(t)
        if _key(before) == _key(after):
            return
        body = {"timestamp": int(time.time())}
        if after is not None:
            body["execution"] = self._execution(after)
        self._publish(f"$aws/things/{name}/jobs/notify-next", body)

    # -- requests -----------------------------------------------------------------------
    def _on_message(self, client, userdata, message) -> None:
        parts = message.topic.split("/")
        if parts[0] == "logi2" and len(parts) == 3:
            with self.lock:
                self.thing(parts[2]).telemetry.append(message.payload.decode(errors="replace"))
            return
        if len(parts) < 4 or parts[0] != "$aws" or parts[3] != "jobs":
            return
        if parts[-1] in ("accepted", "rejected", "notify", "notify-next"):
            return
        name = parts[2]
        with self.lock:
            self._answer(name, parts[4:], message.topic, message.payload)

    def _answer(self, name: str, rest: list[str], topic: str, payload: bytes) -> None:
        t = self.thing(name)
        now = int(time.time())
        try:
            req = json.loads(payload)
            if not isinstance(req, dict):
                raise ValueError
        except ValueError:
            self._publish(topic + "/rejected", {"code": "InvalidJson", "timestamp": now})
            return
        token = req.get("clientToken")
        if rest == ["get"]:
            op, job_id = "get", None
        elif rest == ["start-next"]:
            op, job_id = "start-next", None
        elif len(rest) == 2 and rest[1] in ("get", "update"):
            op, job_id = ("describe" if rest[1] == "get" else "update"), rest[0]
        else:
            op, job_id = "invalid", None

        def reject(code, message, execution=None):
            body = {"code": code, "message": message, "timestamp": now}
            if token is not None and code != "InvalidJson":  # AWS cannot read a token it refuses
                body["clientToken"] = token
            if execution is not None:
                body["executionState"] = {
                    "status": execution["status"],
                    "versionNumber": execution["version"],
                }
            self._publish(topic + "/rejected", body)

        def accept(body):
            body["timestamp"] = now
            if token is not None:
                body["clientToken"] = token
            self._publish(topic + "/accepted", body)

        fault = t.faults.get(op)
        if fault:
            code = fault.pop(0)
            return reject(code, "injected " + code)
        if op == "invalid":
            return reject("InvalidTopic", "no such API")
        if op == "get":
            summaries = lambda status: [  # noqa: E731
                {k: v for k, v in self._execution(e, False).items() if k not in ("status", "statusDetails")}
                for e in t.executions
                if e["status"] == status
            ]
            return accept({"inProgressJobs": summaries("IN_PROGRESS"), "queuedJobs": summaries("QUEUED")})
        if op == "start-next":
            head = self._head(t)
            if head is None:
                return accept({})
            if head["status"] == "QUEUED":
                head.update(status="IN_PROGRESS", started_at=now, updated_at=now)
                head["version"] += 1
                if "statusDetails" in req:
                    head["details"] = req["statusDetails"]
            return accept({"execution": self._execution(head)})
        if op == "describe":
            if job_id == "$next":
                head = self._head(t)
                return accept(
                    {"execution": self._execution(head, req.get("includeJobDocument", True))} if head else {}
                )
            found = self._find(t, job_id, req.get("executionNumber"))
            if found is None:
                return reject("ResourceNotFound", "no execution of " + job_id)
            return accept({"execution": self._execution(found, req.get("includeJobDocument", True))})
        # update
        found = self._find(t, job_id, req.get("executionNumber"))
        if found is None:
            return reject("ResourceNotFound", "no execution of " + job_id)
        status = req.get("status")
        if status not in DEVICE_STATUSES:
            return reject("InvalidRequest", "bad status")
        details = req.get("statusDetails")
        if details is not None:
            problem = self._details_problem(details)
            if problem:
                return reject("InvalidRequest", problem)
        expected = req.get("expectedVersion")
        if expected is not None and int(expected) != found["version"]:
            return reject(
                "VersionMismatch",
                f"Expected version {expected} but found version {found['version']}",
                found,
            )
        if found["status"] in TERMINAL:
            return reject("InvalidStateTransition", "execution is " + found["status"], found)
        before = self._head(t)
        found.update(status=status, updated_at=now)
        found["version"] += 1
        if details is not None:
            found["details"] = details
        body = {}
        if req.get("includeJobExecutionState"):
            body["executionState"] = {"status": status, "versionNumber": found["version"]}
        accept(body)
        self._notify_head(name, before)

    @staticmethod
    def _details_problem(details) -> str | None:
        if not isinstance(details, dict) or len(details) > 10:
            return "statusDetails: at most 10 pairs"
        for k, v in details.items():
            if not 1 <= len(k) <= 128 or set(k) - KEY_CHARS:
                return "statusDetails: bad key " + k
            if (
                not isinstance(v, str)
                or not 1 <= len(v) <= 1024
                or any(ord(c) < 32 or ord(c) == 127 for c in v)
            ):
                return "statusDetails: bad value for " + k
        return None

    @staticmethod
    def _find(t: Thing, job_id: str, number):
        matches = [e for e in t.executions if e["job_id"] == job_id]
        if number is not None:
            matches = [e for e in matches if e["execution_number"] == int(number)]
        return matches[-1] if matches else None

    # -- control ------------------------------------------------------------------------
    def _control_loop(self) -> None:
        while True:
            try:
                conn, _ = self._control.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_control, args=(conn,), daemon=True).start()

    def _serve_control(self, conn: socket.socket) -> None:
        with conn:
            reader = conn.makefile("rb")
            for line in reader:
                try:
                    result = self.command(json.loads(line))
                except Exception as error:  # noqa: BLE001 - reported back to the test
                    result = {"error": repr(error)}
                conn.sendall(json.dumps(result).encode() + b"\n")

    def command(self, cmd: dict):
        with self.lock:
            name = cmd.get("thing", "")
            t = self.thing(name)
            kind = cmd["cmd"]
            if kind == "create":
                doc = cmd.get("doc")
                if "pad" in cmd:
                    doc = {"operation": "test.echo", "pad": "x" * int(cmd["pad"])}
                before = self._head(t)
                number = 1 + sum(1 for e in t.executions if e["job_id"] == cmd["job_id"])
                t.executions.append(
                    {
                        "job_id": cmd["job_id"],
                        "status": "QUEUED",
                        "version": 1,
                        "execution_number": number,
                        "doc": doc,
                        "details": None,
                        "queued_at": int(time.time()),
                        "updated_at": int(time.time()),
                    }
                )
                self._notify_head(name, before)
                return {"ok": True}
            if kind == "inject":
                t.faults.setdefault(cmd["op"], []).extend([cmd["code"]] * int(cmd.get("count", 1)))
                return {"ok": True}
            if kind == "publish":
                payload = cmd.get("payload", "")
                if "size" in cmd:
                    payload = "x" * int(cmd["size"])
                self.client.publish(cmd["topic"], payload, qos=int(cmd.get("qos", 1)))
                return {"ok": True}
            if kind == "state":
                return [
                    {k: e[k] for k in ("job_id", "status", "version", "execution_number", "details")}
                    for e in t.executions
                ]
            if kind == "telemetry":
                return t.telemetry
            if kind == "reset":
                self.things[name] = Thing()
                return {"ok": True}
            raise ValueError("unknown command " + kind)
