# micropython: needs=broker,responder
# micropython: timeout=90
# jobs.client against mosquitto + the scripted responder: each rejected code, retries with
# fresh tokens, ignored answers, statusDetails cleaning, every request's fields.
import json

from jobs import client as C
from jobs import config, mqtt, tls, token, topics
from jobs.scan import Scanner
from jobsctl import broker_port, identity, responder

THING = "engine-3"


def _client(**overrides):
    raw = {"endpoint": "localhost", "thing_name": THING, "request_timeout_ms": 1500, "retry_base_ms": 20}
    raw.update(overrides)
    cfg = config.validate(raw)
    ca, cert, key = identity(THING)
    link = tls.new_client(mqtt.MQTT, THING, "localhost", broker_port(), 30, ca, cert, key)
    link.setup(4096, 3000, 3000)
    logs = []
    c = C.Client(
        link, topics.Topics(THING), token.Tokens("feed0001"), Scanner(), cfg, lambda *a: logs.append(a)
    )
    link.open(c.topics.subscriptions())
    responder(cmd="reset", thing=THING)
    return c, logs


def _log():
    return responder(cmd="log", thing=THING)


def test_start_next_describe_update_and_get_round_trip():
    c, _ = _client()
    responder(cmd="create", thing=THING, job_id="j1", doc={"operation": "x", "n": 1}, notify=False)
    assert c.get_pending() == C.ACCEPTED
    assert c.describe("$next") == C.ACCEPTED and c.execution.job_id == "j1"
    assert c.execution.status == "QUEUED" and c.execution.doc == {"operation": "x", "n": 1}
    assert c.start_next({"phase": "claimed"}, step_timeout=5) == C.ACCEPTED
    ex = c.execution
    assert (ex.job_id, ex.status, ex.version, ex.execution_number) == ("j1", "IN_PROGRESS", 2, 1)
    assert c.update("j1", "IN_PROGRESS", {"p": "1"}, 2, 1, include_state=True, step_timeout=3) == C.ACCEPTED
    assert c.state_version == 3 and c.state_status == "IN_PROGRESS"
    assert c.describe("j1", 1, include_document=False) == C.ACCEPTED
    assert c.execution.doc is None and c.execution.version == 3
    sent = [x for x in _log() if x["op"] == "start-next"][0]
    assert sent["details"] == {"phase": "claimed"}
    assert c.start_next() == C.ACCEPTED and c.execution.job_id == "j1"  # re-handed, not restarted
    assert c.update("j1", "SUCCEEDED", {"r": "ok"}, 3, 1) == C.ACCEPTED
    assert c.start_next() == C.ACCEPTED and c.execution is None
    c.link.disconnect()


def test_each_non_retryable_code_is_returned_after_one_request():
    c, logs = _client()
    responder(cmd="create", thing=THING, job_id="j2", doc={"operation": "x"}, notify=False)
    for code in ("ResourceNotFound", "InvalidRequest", "InvalidJson", "InvalidTopic", "TerminalStateReached"):
        responder(cmd="inject", thing=THING, op="update", code=code)
        before = len(_log())
        assert c.update("j2", "IN_PROGRESS") == C.REJECTED
        assert c.code == code
        assert len(_log()) == before + 1, code  # never a retry loop
    assert any("rejected:" in a for entry in logs for a in entry if isinstance(a, str))
    c.link.disconnect()


def test_throttled_and_internal_error_are_retried_with_fresh_tokens():
    c, _ = _client(retries=3)
    responder(cmd="create", thing=THING, job_id="j3", doc={"operation": "x"}, notify=False)
    responder(cmd="inject", thing=THING, op="describe", code="RequestThrottled", count=2)
    responder(cmd="inject", thing=THING, op="describe", code="InternalError")
    assert c.describe("j3") == C.ACCEPTED
    tokens = [x["token"] for x in _log() if x["op"] == "describe"]
    assert len(tokens) == 4 and len(set(tokens)) == 4, tokens
    responder(cmd="inject", thing=THING, op="describe", code="RequestThrottled", count=5)
    assert c.describe("j3") == C.REJECTED and c.code == "RequestThrottled"  # bounded: 1 + 3 tries
    assert len([x for x in _log() if x["op"] == "describe"]) == 8
    c.link.disconnect()


def test_version_mismatch_carries_the_execution_state():
    c, _ = _client()
    responder(cmd="create", thing=THING, job_id="j4", doc={"operation": "x"}, notify=False)
    assert c.update("j4", "IN_PROGRESS", None, 7) == C.REJECTED
    assert c.code == "VersionMismatch" and c.state_version == 1 and c.state_status == "QUEUED"
    c.link.disconnect()


def test_answers_with_unknown_tokens_are_ignored_and_counted():
    c, _ = _client()
    prefix = "$aws/things/" + THING + "/jobs/"
    for tok in ("someone-else-1", "feed0001-999"):
        body = json.dumps(
            {"clientToken": tok, "timestamp": 1, "execution": {"jobId": "zz", "status": "QUEUED"}}
        )
        responder(cmd="publish", topic=prefix + "start-next/accepted", payload=body)
    responder(cmd="publish", topic=prefix + "start-next/accepted", payload='{"timestamp":1}')
    c.pump(400)
    assert c.ignored == 3
    assert c.execution is None
    c.link.disconnect()


def test_no_answer_times_out_and_forgets_the_token():
    c, _ = _client(request_timeout_ms=300)
    responder(cmd="silence", thing=THING, on=True)
    try:
        assert c.start_next() == C.TIMEOUT
        assert c.tokens.outstanding() == 0
    finally:
        responder(cmd="silence", thing=THING, on=False)
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
    c, _ = _client()
    responder(cmd="create", thing=THING, job_id="j5", doc={"operation": "x"}, notify=False)
    details = {"reason": "a\nb", "x" * 130: "1", "v": "z" * 1500}
    assert c.update("j5", "FAILED", details) == C.ACCEPTED
    c.link.disconnect()
