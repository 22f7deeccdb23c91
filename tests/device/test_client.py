# micropython: needs=standin,broker,responder
# micropython: timeout=90
# jobs.client against the local AWS IoT stand-in (tools/standin): each rejected code the real
# service gives, retries with fresh tokens under its fault injection, late answers, statusDetails
# cleaning, every request's fields. The scripted responder (tests/jobs_responder.py) only for what
# a real service never sends.
import json

import standinctl as aws
from jobs import client as C
from jobs import config, mqtt, tls, token, topics
from jobs.scan import Scanner
from jobsctl import broker_port, identity, responder


def _open(thing, port, ident, **overrides):
    raw = {"endpoint": "localhost", "thing_name": thing, "request_timeout_ms": 1500, "retry_base_ms": 20}
    raw.update(overrides)
    cfg = config.validate(raw)
    ca, cert, key = ident
    link = mqtt.MQTT(
        thing,
        "localhost",
        port,
        30,
        ssl=tls.context(ca, cert, key),
        buffer_size=4096,
        connect_timeout_ms=3000,
        io_timeout_ms=3000,
    )
    logs = []
    c = C.Client(
        link, topics.Topics(thing), token.Tokens("feed0001"), Scanner(), cfg, lambda *a: logs.append(a)
    )
    c.sent = []  # (topic, request) of every publish, as the service receives them
    publish = link.publish

    def recording(topic, msg, retain=False, qos=0):
        c.sent.append((topic.decode() if isinstance(topic, bytes) else topic, json.loads(msg)))
        return publish(topic, msg, retain, qos)

    link.publish = recording
    link.open(c.topics.subscriptions())
    return c, logs


def _client(**overrides):
    """A client for a fresh thing on the stand-in: (client, logs, thing)."""
    thing = aws.new_thing("client")
    c, logs = _open(thing, aws.port(), aws.identity(thing), **overrides)
    return c, logs, thing


def _scripted_client(**overrides):
    thing = "engine-3"
    c, logs = _open(thing, broker_port(), identity(thing), **overrides)
    responder(cmd="reset", thing=thing)
    return c, logs, thing


def _tokens(c, suffix):
    return [req["clientToken"] for topic, req in c.sent if topic.endswith(suffix)]


def test_start_next_describe_update_and_get_round_trip():
    c, _, thing = _client()
    j1 = thing + "-j1"
    aws.create_job(j1, {"operation": "x", "n": 1}, thing)
    a = c.get_pending()
    assert a.result == C.ACCEPTED and a.pending == [(j1, 1)], a.pending
    a = c.describe("$next")
    assert a.result == C.ACCEPTED and a.execution.job_id == j1
    assert a.execution.status == "QUEUED" and a.execution.doc == {"operation": "x", "n": 1}
    a = c.start_next({"phase": "claimed"}, step_timeout=5)
    ex = a.execution
    assert a.result == C.ACCEPTED
    assert (ex.job_id, ex.status, ex.version, ex.execution_number) == (j1, "IN_PROGRESS", 2, 1)
    assert aws.details(thing, j1) == {"phase": "claimed"}
    a = c.update(j1, "IN_PROGRESS", {"p": "1"}, 2, 1, include_state=True, step_timeout=3)
    assert a.result == C.ACCEPTED and a.state_version == 3 and a.state_status == "IN_PROGRESS"
    a = c.describe(j1, 1, include_document=False)
    assert a.result == C.ACCEPTED and a.execution.doc is None and a.execution.version == 3
    a = c.start_next()
    assert a.result == C.ACCEPTED and a.execution.job_id == j1  # re-handed, not restarted
    assert c.update(j1, "SUCCEEDED", {"r": "ok"}, 3, 1).result == C.ACCEPTED
    assert aws.status(thing, j1) == "SUCCEEDED"
    a = c.start_next()
    assert a.result == C.ACCEPTED and a.execution is None
    c.link.disconnect()


def _rejected_once(c, job_id, status, code, kind):
    before = len(c.sent)
    a = c.update(job_id, status)
    assert a.result == C.REJECTED, code
    assert a.code == code and a.kind == kind, (a.code, code, a.kind)
    assert len(c.sent) == before + 1, code  # never a retry loop


def test_each_non_retryable_code_the_service_gives_is_returned_after_one_request():
    c, logs, thing = _client()
    j2 = thing + "-j2"
    aws.create_job(j2, {"operation": "x"}, thing)
    _rejected_once(c, thing + "-none", "IN_PROGRESS", "ResourceNotFound", C.MISSING)
    _rejected_once(c, j2, "CANCELED", "InvalidRequest", C.REFUSED)  # a device may not set CANCELED
    assert c.update(j2, "SUCCEEDED").result == C.ACCEPTED
    _rejected_once(c, j2, "IN_PROGRESS", "InvalidStateTransition", C.GONE)
    aws.settings(update_terminal_code="TerminalStateReached")  # what AWS answers in practice
    try:
        _rejected_once(c, j2, "IN_PROGRESS", "TerminalStateReached", C.GONE)
    finally:
        aws.settings(update_terminal_code="InvalidStateTransition")
    assert any("rejected:" in a for entry in logs for a in entry if isinstance(a, str))
    c.link.disconnect()


def test_malformed_request_codes_are_returned_after_one_request():
    # Scripted responder: the client only sends well-formed JSON to valid topics, so a real
    # service never answers it InvalidJson or InvalidTopic; the responder injects them.
    c, _, thing = _scripted_client()
    for code, kind in (("InvalidJson", C.REFUSED), ("InvalidTopic", C.OTHER)):
        responder(cmd="inject", thing=thing, op="update", code=code)
        _rejected_once(c, "j2", "IN_PROGRESS", code, kind)
    c.link.disconnect()


def test_invalid_json_without_a_token_on_the_request_topic_is_its_answer():
    # AWS cannot echo the clientToken of a payload it could not read: the rejection comes
    # without one, on the request's own rejected topic, and must not leave the request waiting
    c, _, thing = _scripted_client(request_timeout_ms=3000)
    prefix = "$aws/things/" + thing + "/jobs/"
    responder(cmd="inject", thing=thing, op="update", code="InvalidJson")
    before = len(c.sent)
    a = c.update("j9", "FAILED", {"reason": "x"})
    assert a.result == C.REJECTED and a.code == "InvalidJson", (a.result, a.code)
    assert len(c.sent) == before + 1
    # the same tokenless rejection on another job's topic is not an answer to us: ignored
    responder(
        cmd="publish", topic=prefix + "other/update/rejected", payload='{"code":"InvalidJson","timestamp":1}'
    )
    c.pump(200)
    assert c.ignored >= 1
    c.link.disconnect()


def test_throttled_and_internal_error_are_retried_with_fresh_tokens():
    c, _, thing = _client(retries=3, retry_base_ms=10)
    j3 = thing + "-j3"
    aws.create_job(j3, {"operation": "x"}, thing)
    try:
        aws.settings(throttle_every=2)  # every second request: at most one retry needed
        assert c.describe(j3).result == C.ACCEPTED
        assert c.describe(j3).result == C.ACCEPTED
        tokens = _tokens(c, "/get")
        # the service counts every request it gets: at least one of the two was throttled and retried
        assert 3 <= len(tokens) <= 4 and len(set(tokens)) == len(tokens), tokens
        for fault, code in (
            ({"throttle_every": 1}, "RequestThrottled"),
            ({"internal_error_rate": 1.0}, "InternalError"),
        ):
            aws.settings(**dict({"throttle_every": 0, "internal_error_rate": 0.0}, **fault))
            before = len(_tokens(c, "/get"))
            a = c.describe(j3)
            assert a.result == C.REJECTED and a.code == code  # bounded: 1 + 3 tries
            tokens = _tokens(c, "/get")[before:]
            assert len(tokens) == 4 and len(set(tokens)) == 4, (code, tokens)
    finally:
        aws.no_faults()
    c.link.disconnect()


def test_version_mismatch_carries_the_execution_state():
    c, _, thing = _client()
    j4 = thing + "-j4"
    aws.create_job(j4, {"operation": "x"}, thing)
    a = c.update(j4, "IN_PROGRESS", None, 7)
    assert a.result == C.REJECTED and a.kind == C.STALE
    assert a.code == "VersionMismatch" and a.state_version == 1 and a.state_status == "QUEUED"
    c.link.disconnect()


def test_answers_with_unknown_tokens_are_ignored_and_counted():
    # Scripted responder: a real service answers only the requests it got, with their tokens;
    # answers for someone else's token, or with none, have to be published directly.
    c, _, thing = _scripted_client()
    prefix = "$aws/things/" + thing + "/jobs/"
    for tok in ("someone-else-1", "feed0001-999"):
        body = json.dumps(
            {"clientToken": tok, "timestamp": 1, "execution": {"jobId": "zz", "status": "QUEUED"}}
        )
        responder(cmd="publish", topic=prefix + "start-next/accepted", payload=body)
    responder(cmd="publish", topic=prefix + "start-next/accepted", payload='{"timestamp":1}')
    for _ in range(100):
        if c.ignored == 3:
            break
        c.pump(20)
    assert c.ignored == 3
    c.link.disconnect()


def test_late_answer_times_out_forgets_the_token_and_is_ignored():
    c, _, thing = _client(request_timeout_ms=200)
    aws.settings(response_delay=0.4)
    try:
        assert c.start_next().result == C.TIMEOUT
        assert c.tokens.outstanding() == 0
        for _ in range(60):  # the answer arrives after all, for a token no longer waited for
            if c.ignored:
                break
            c.pump(50)
        assert c.ignored == 1
    finally:
        aws.no_faults()
    c.link.disconnect()


def test_hostile_status_details_are_accepted_by_the_service():
    # controls, bidi and zero-width characters, CESU-8 from json.loads of a surrogate pair,
    # a lone surrogate, long keys and values, too many pairs: all sent, all accepted
    c, _, thing = _client()
    j5 = thing + "-j5"
    aws.create_job(j5, {"operation": "x"}, thing)
    echoed = json.loads('"a\\n\\u202e\\u0007\\u200b\\ud83d\\ude80\\ud800\\ufeffz"')
    details = {"reason": echoed, "x" * 130: "1", "v": "z" * 1500, "bad key!": "\U0001f680" * 600}
    for i in range(12):
        details["k" + str(i)] = "\u00ad" * i
    assert c.update(j5, "FAILED", details).result == C.ACCEPTED
    stored = aws.details(thing, j5)
    # (the stand-in's JSON escapes the rocket, so MicroPython decodes it to CESU-8 here too)
    assert stored["reason"] == json.loads('"a \\ufffd \\ufffd\\ud83d\\ude80\\ufffd\\ufffdz"')
    assert 1 < len(stored) <= 10, stored
    assert len(json.dumps(stored)) <= 2048 + 64
    small = {"reason": "kept"}
    for i in range(15):
        small["k" + str(i)] = "v" * 100 + "\u200b"
    assert c.update(j5, "FAILED", small).result == C.REJECTED  # terminal now: refused as such
    j6 = thing + "-j6"
    aws.create_job(j6, {"operation": "x"}, thing)
    assert c.update(j6, "FAILED", small).result == C.ACCEPTED
    stored = aws.details(thing, j6)
    assert len(stored) == 10 and stored["reason"] == "kept", stored
    assert all(v == "v" * 100 + "\ufffd" for k, v in stored.items() if k != "reason"), stored
    c.link.disconnect()
