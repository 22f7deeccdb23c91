"""End to end: hostile job documents. Each is answered with a status and a reason, the device
stays up (one boot), and its heap is flat over repeated rounds.

The stand-in's control plane validates documents as AWS does (a JSON object, at most 32 KiB), so
these cannot be created as jobs. They are delivered on the device's own topics with the service
identity: an `Injector` (MQTT, `jobs-service` certificate) answers the device's start-next
requests itself, with a hostile `start-next/accepted` carrying the device's clientToken, and
accepts its updates, recording them. The real Jobs service still answers too, but one second
late (`response_delay`), so its answers reach the device after the injected ones and are
ignored by token. A fake notify-next makes the idle device ask.
"""

import json
import threading
import time

import pytest

from tests.host.e2e import Rig, Sniffer, wait_until

THING = "hostile-1"
HEAP = "256K"  # modules compiled from .py on the device; a 128 KiB payload must not need its size


class Injector(Sniffer):
    """Answers THING's start-next (hostile, once armed; else "nothing pending") and updates."""

    def __init__(self, rig: Rig, thing: str):
        self.prefix = f"$aws/things/{thing}/jobs/"
        super().__init__(rig.aws, [self.prefix + "start-next", self.prefix + "+/update"])
        self.armed = None  # bytes of the next start-next answer, "{token}" replaced
        self.updates: dict[str, list[dict]] = {}
        self.errors: list[str] = []
        self.changed = threading.Condition()

    def _on_message(self, client, userdata, message) -> None:
        try:
            self._answer(client, message)
        except Exception as error:  # noqa: BLE001 - paho would drop the connection; keep the cause
            self.errors.append(repr(error))

    def _answer(self, client, message) -> None:
        super()._on_message(client, userdata=None, message=message)
        request = json.loads(message.payload)
        token = request["clientToken"]
        if message.topic.endswith("/start-next"):
            body, self.armed = self.armed, None
            if body is None:
                body = json.dumps({"clientToken": token, "timestamp": int(time.time())}).encode()
            else:
                body = body.replace(b"{token}", token.encode())
            client.publish(self.prefix + "start-next/accepted", body, qos=1)
            return
        job = message.topic[len(self.prefix) :].split("/")[0]
        state = {"status": request["status"], "versionNumber": int(request.get("expectedVersion") or 1) + 1}
        answer = {"clientToken": token, "timestamp": int(time.time()), "executionState": state}
        client.publish(f"{self.prefix}{job}/update/accepted", json.dumps(answer), qos=1)
        with self.changed:
            self.updates.setdefault(job, []).append(request)
            self.changed.notify_all()


def envelope(job: str, document: bytes, execution_extra: bytes = b"") -> bytes:
    """A start-next/accepted with `document` as its jobDocument, byte for byte."""
    return (
        b'{"clientToken":"{token}","timestamp":1700000000,"execution":{"jobId":"' + job.encode() + b'",'
        b'"status":"IN_PROGRESS","queuedAt":1700000000,"startedAt":1700000000,"lastUpdatedAt":1700000000,'
        b'"versionNumber":2,"executionNumber":1' + execution_extra + b',"jobDocument":' + document + b"}}"
    )


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    rig = Rig(tmp_path_factory.mktemp("e2e-hostile")).start()
    yield rig
    rig.stop()


@pytest.fixture(scope="module")
def hostile(rig):
    injector = Injector(rig, THING).start()
    rig.faults(response_delay=1.0)
    dev = rig.device(THING, heapsize=HEAP)
    yield dev, injector
    injector.stop()


_jobs = iter(range(1, 1_000_000))


def deliver(dev, injector, payload_for, timeout: float = 15.0) -> dict:
    """Arm the injector with payload_for(job_id), nudge the device, return its final update."""
    job = f"h-{next(_jobs)}"
    injector.armed = payload_for(job)
    note = {"timestamp": 1700000000, "execution": {"jobId": job, "status": "QUEUED", "queuedAt": 1700000000,
            "lastUpdatedAt": 1700000000, "versionNumber": 1, "executionNumber": 1}}  # fmt: skip
    injector.publish(injector.prefix + "notify-next", json.dumps(note))
    final = ("SUCCEEDED", "FAILED", "REJECTED")

    def answered():
        with injector.changed:
            return [u for u in injector.updates.get(job, []) if u["status"] in final]

    try:
        updates = wait_until(answered, timeout, f"the final update of {job}")
    except AssertionError:
        raise AssertionError(f"{job}: no final update {injector.errors}\n{dev.output()[-2000:]}") from None
    assert len(updates) == 1
    return updates[0]


DEEP = b'{"operation":"diag.echo","message":' + b"[" * 1000 + b"]" * 1000 + b"}"
BIG = b'{"operation":"diag.echo","message":"' + b"x" * (128 * 1024) + b'"}'
CASES = [
    (
        "malformed JSON",
        b'{"operation":"gpio.write","pin":"LED","value":}',
        "REJECTED",
        "invalid JSON (syntax: ",
    ),
    ("128 KiB", BIG, "REJECTED", "document too large (131"),
    ("1000 deep", DEEP, "REJECTED", "invalid JSON (depth: "),
    ("not an object", b"[1,2,3]", "REJECTED", "document is not a JSON object"),
    ("a string", b'"gpio.write"', "REJECTED", "document is not a JSON object"),
    (
        "pin of the wrong type",
        b'{"operation":"gpio.write","pin":["LED"],"value":1}',
        "REJECTED",
        "pin: alias or GPIO number expected",
    ),
    (
        "value of the wrong type",
        b'{"operation":"gpio.write","pin":"LED","value":"1"}',
        "REJECTED",
        "value: integer expected",
    ),
    (
        "null",
        b'{"operation":"gpio.write","pin":null,"value":1}',
        "REJECTED",
        "pin: alias or GPIO number expected",
    ),
    ("operation of the wrong type", b'{"operation":7}', "REJECTED", "operation: string expected"),
    ("non-UTF-8", b'{"operation":"diag.echo","message":"\xff\xfe\xc3"}', "REJECTED", "invalid JSON (utf8: "),
    (
        "huge integer",
        b'{"operation":"gpio.write","pin":"LED","value":' + b"9" * 90 + b"}",
        "REJECTED",
        "value: at most 1",
    ),
    (
        "too long a number",
        b'{"operation":"gpio.write","pin":"LED","value":' + b"9" * 200 + b"}",
        "REJECTED",
        "invalid JSON (number: ",
    ),
    (
        "huge exponent",
        b'{"operation":"gpio.pulse","pin":"LED","value":1,"ms":1e999}',
        "REJECTED",
        "ms: integer expected",
    ),
    (
        "raw control character",
        b'{"operation":"diag.echo","message":"a\x01b"}',
        "REJECTED",
        "invalid JSON (string: ",
    ),
    (
        "escaped control characters",
        b'{"operation":"diag.echo","message":"a\\u0000b\\u001fc\\td"}',
        "SUCCEEDED",
        None,
    ),
    (
        "long unknown operation",
        b'{"operation":"' + b"z" * 3000 + b'"}',
        "REJECTED",
        "unsupported operation zzz",
    ),
    (
        "long unknown key",
        b'{"operation":"diag.echo","' + b"k" * 3000 + b'":1}',
        "REJECTED",
        "unknown parameter kkk",
    ),
    (
        "duplicate key naming a flash pin",
        b'{"operation":"gpio.write","pin":"LED","value":1,"pin":6}',
        "REJECTED",
        None,
    ),
    ("empty object", b"{}", "REJECTED", "operation missing"),
]


def run_cases(dev, injector) -> dict:
    results = {}
    for name, document, status, reason in CASES:
        update = deliver(dev, injector, lambda job, d=document: envelope(job, d))
        details = update.get("statusDetails", {})
        results[name] = (update["status"], details.get("reason"))
        assert update["status"] == status, (name, update)
        if reason is not None:
            assert details["reason"].startswith(reason), (name, details)
        for value in details.values():  # what AWS would accept: no control characters
            assert all(ord(c) >= 32 and not 127 <= ord(c) < 160 for c in value), (name, details)
    return results


def heap_free(dev, injector) -> int:
    update = deliver(dev, injector, lambda job: envelope(job, b'{"operation":"diag.echo"}'))
    assert update["status"] == "SUCCEEDED"
    return int(update["statusDetails"]["heapFree"])


def test_every_hostile_document_gets_a_status_and_a_reason(hostile):
    dev, injector = hostile
    results = run_cases(dev, injector)
    echoed = [u for job, ups in injector.updates.items() for u in ups if u["status"] == "SUCCEEDED"]
    assert echoed[-1]["statusDetails"]["echo"] == "a b c d"
    # the duplicate key: the last one counts (json.loads), and pin 6 is never written
    assert results["duplicate key naming a flash pin"][1].startswith("pin: 6 is a flash pin")
    assert dev.pins_log() == []
    assert dev.sim.boots == 1 and dev.problems() == []


def test_garbage_answers_and_notifications_are_survived(hostile):
    dev, injector = hostile
    mark = dev.mark()
    garbage = [b"\x00\xff\xfe not json at all", b"", b"[" * 5000, b'{"clientToken":' + b"9" * 300 + b"}",
               b"{" + b" " * (200 * 1024) + b"}"]  # fmt: skip
    for payload in garbage:
        injector.publish(injector.prefix + "notify-next", payload)
    # an unreadable start-next answer: the device cannot tell it is its answer; it asks again
    injector.armed = b"\xff" * 64
    injector.publish(injector.prefix + "notify-next", json.dumps({"timestamp": 1}))
    dev.wait_log("jobs: invalid JSON", after=mark)
    update = deliver(dev, injector, lambda job: envelope(job, b'{"operation":"gpio.read","pin":"BUTTON"}'))
    assert update["status"] == "SUCCEEDED"
    assert dev.sim.boots == 1 and dev.problems() == []


def test_the_heap_is_flat_over_repeated_rounds(hostile):
    dev, injector = hostile
    run_cases(dev, injector)  # warm: every module the cases need is imported
    first = heap_free(dev, injector)
    run_cases(dev, injector)
    second = heap_free(dev, injector)
    run_cases(dev, injector)
    third = heap_free(dev, injector)
    print("heap free after rounds:", first, second, third)
    assert abs(second - first) <= 512 and abs(third - second) <= 512, (first, second, third)
    assert dev.sim.boots == 1 and dev.problems() == []


def test_documents_aws_accepts_but_the_device_cannot_use_are_answered_through_the_real_service(rig):
    # valid JSON within AWS's 32 KiB, created through the control plane: nothing injected
    rig.faults()
    try:
        dev = rig.device("hostile-real")
        cases = [
            ('{"operation":"diag.echo","message":' + "[" * 500 + "]" * 500 + "}", "invalid JSON (depth: "),
            ('{"operation":"gpio.write","pin":"LED","value":' + "1" * 150 + "}", "invalid JSON (number: "),
            (json.dumps({"operation": "diag.echo", "message": "m" * 30000}), "document too large (30"),
        ]
        for i, (document, reason) in enumerate(cases):
            done = dev.run(f"real-{i}", document)
            assert done["status"] == "REJECTED", done
            assert done["statusDetails"]["detailsMap"]["reason"].startswith(reason), done
        assert dev.run("real-ok", {"operation": "diag.echo"})["status"] == "SUCCEEDED"
        assert dev.sim.boots == 1 and dev.problems() == []
    finally:
        rig.faults(response_delay=1.0)
