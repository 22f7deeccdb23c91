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
    assert c.get_pending() == C.ACCEPTED
    assert c.describe("$next") == C.ACCEPTED and c.execution.job_id == j1
    assert c.execution.status == "QUEUED" and c.execution.doc == {"operation": "x", "n": 1}
    assert c.start_next({"phase": "claimed"}, step_timeout=5) == C.ACCEPTED
    ex = c.execution
    assert (ex.job_id, ex.status, ex.version, ex.execution_number) == (j1, "IN_PROGRESS", 2, 1)
    assert aws.details(thing, j1) == {"phase": "claimed"}
    assert c.update(j1, "IN_PROGRESS", {"p": "1"}, 2, 1, include_state=True, step_timeout=3) == C.ACCEPTED
    assert c.state_version == 3 and c.state_status == "IN_PROGRESS"
    assert c.describe(j1, 1, include_document=False) == C.ACCEPTED
    assert c.execution.doc is None and c.execution.version == 3
    assert c.start_next() == C.ACCEPTED and c.execution.job_id == j1  # re-handed, not restarted
    assert c.update(j1, "SUCCEEDED", {"r": "ok"}, 3, 1) == C.ACCEPTED
    assert aws.status(thing, j1) == "SUCCEEDED"
    assert c.start_next() == C.ACCEPTED and c.execution is None
    c.link.disconnect()


def _rejected_once(c, job_id, status, code):
    before = len(c.sent)
    assert c.update(job_id, status) == C.REJECTED, code
    assert c.code == code, (c.code, code)
    assert len(c.sent) == before + 1, code  # never a retry loop


def test_each_non_retryable_code_the_service_gives_is_returned_after_one_request():
    c, logs, thing = _client()
    j2 = thing + "-j2"
    aws.create_job(j2, {"operation": "x"}, thing)
    _rejected_once(c, thing + "-none", "IN_PROGRESS", "ResourceNotFound")
    _rejected_once(c, j2, "CANCELED", "InvalidRequest")  # a device may not set CANCELED
    assert c.update(j2, "SUCCEEDED") == C.ACCEPTED
    _rejected_once(c, j2, "IN_PROGRESS", "InvalidStateTransition")
    aws.settings(update_terminal_code="TerminalStateReached")  # what AWS answers in practice
    try:
        _rejected_once(c, j2, "IN_PROGRESS", "TerminalStateReached")
    finally:
        aws.settings(update_terminal_code="InvalidStateTransition")
    assert any("rejected:" in a for entry in logs for a in entry if isinstance(a, str))
    c.link.disconnect()


def test_malformed_request_codes_are_returned_after_one_request():
    # Scripted responder: the client only sends well-formed JSON to valid topics, so a real
    # service never answers it InvalidJson or InvalidTopic; the responder injects them.
    c, _, thing = _scripted_client()
    for code in ("InvalidJson", "InvalidTopic"):
        responder(cmd="inject", thing=thing, op="update", code=code)
        _rejected_once(c, "j2", "IN_PROGRESS", code)
    c.link.disconnect()


def test_throttled_and_internal_error_are_retried_with_fresh_tokens():
    c, _, thing = _client(retries=3, retry_base_ms=10)
    j3 = thing + "-j3"
    aws.create_job(j3, {"operation": "x"}, thing)
    try:
        aws.settings(throttle_every=2)  # every second request: at most one retry needed
        assert c.describe(j3) == C.ACCEPTED
        assert c.describe(j3) == C.ACCEPTED
        tokens = _tokens(c, "/get")
        # the service counts every request it gets: at least one of the two was throttled and retried
        assert 3 <= len(tokens) <= 4 and len(set(tokens)) == len(tokens), tokens
        for fault, code in (
            ({"throttle_every": 1}, "RequestThrottled"),
            ({"internal_error_rate": 1.0}, "InternalError"),
        ):
            aws.settings(**dict({"throttle_every": 0, "internal_error_rate": 0.0}, **fault))
            before = len(_tokens(c, "/get"))
            assert c.describe(j3) == C.REJECTED and c.code == code  # bounded: 1 + 3 tries
            tokens = _tokens(c, "/get")[before:]
            assert len(tokens) == 4 and len(set(tokens)) == 4, (code, tokens)
    finally:
        aws.no_faults()
    c.link.disconnect()


def test_version_mismatch_carries_the_execution_state():
    c, _, thing = _client()
    j4 = thing + "-j4"
    aws.create_job(j4, {"operation": "x"}, thing)
    assert c.update(j4, "IN_PROGRESS", None, 7) == C.REJECTED
    assert c.code == "VersionMismatch" and c.state_version == 1 and c.state_status == "QUEUED"
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
    assert c.execution is None
    c.link.disconnect()


def test_late_answer_times_out_forgets_the_token_and_is_ignored():
    c, _, thing = _client(request_timeout_ms=200)
    aws.settings(response_delay=0.4)
    try:
        assert c.start_next() == C.TIMEOUT
        assert c.tokens.outstanding() == 0
        for _ in range(60):  # the answer arrives after all, for a token no longer waited for
            if c.ignored:
                break
            c.pump(50)
        assert c.ignored == 1 and c.execution is None
    finally:
        aws.no_faults()
    c.link.disconnect()


def test_status_details_are_cleaned_not_refused():
    d = {"reason": "line1\nline2\ttab", "bad key!": "v", "long": "y" * 2000, "empty": "", "n": 5}
    out = C.clean_details(d)
    assert out["reason"] == "line1 line2 tab"
    assert out["bad_key_"] == "v"
    assert len(out["long"]) == 1024 and out["long"].endswith("...")
    assert out["empty"] == "-" and out["n"] == "5"
    assert C.clean_details({"k" * 200: "v"}) == {"k" * 128: "v"}
    many = {"reason": "kept"}
    for i in range(15):
        many["k" + str(i)] = "v"
    out = C.clean_details(many)
    assert len(out) == 10 and out["reason"] == "kept"


def test_cleaned_details_are_accepted_by_the_service():
    c, _, thing = _client()
    j5 = thing + "-j5"
    aws.create_job(j5, {"operation": "x"}, thing)
    details = {"reason": "a\nb", "x" * 130: "1", "v": "z" * 1500}
    assert c.update(j5, "FAILED", details) == C.ACCEPTED
    stored = aws.details(thing, j5)
    assert stored["reason"] == "a b" and stored["x" * 128] == "1" and len(stored["v"]) == 1024, stored
    c.link.disconnect()
