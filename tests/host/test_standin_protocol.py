"""The Jobs service answers every device topic as AWS does (docs/protocol.md, "The AWS IoT Jobs MQTT API")."""

import itertools

import pytest

from tools.standin import StandIn
from tools.standin.device import Device

_NAMES = itertools.count(1)


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    with StandIn(tmp_path_factory.mktemp("standin"), minute_seconds=60) as stand_in:
        yield stand_in


@pytest.fixture
def dev(aws):
    device = Device.connect(aws, f"proto-{next(_NAMES)}")
    yield device
    device.close()


def _job(aws, dev, doc=None, wait=True, **options) -> str:
    """Create a job for `dev`; unless wait=False, until its notifications have reached `dev`."""
    job_id = f"job-{next(_NAMES)}"
    aws.create_job(job_id, doc or {"operation": "demo", "n": 1}, [dev.name], **options)
    if wait:
        await_notified(dev, job_id)
    return job_id


def await_notified(dev, job_id):
    """Wait for the notify listing `job_id`, then a GetPending round trip (the service publishes
    notify and notify-next back to back, so anything of this change is in the queue after it)."""
    while True:
        jobs = dev.expect("notify")["jobs"]
        if any(s["jobId"] == job_id for group in jobs.values() for s in group):
            break
    assert dev.request("get").accepted


def _quiet(dev) -> list:
    """Messages that arrived before a GetPending round trip: a barrier for 'nothing was sent'."""
    assert dev.request("get").accepted
    return [topic.rsplit("/", 1)[-1] for topic, _ in dev.drain()]


def _is_int_seconds(value) -> bool:
    return isinstance(value, int) and 1_600_000_000 < value < 4_000_000_000


def test_start_next_with_nothing_pending_is_accepted_without_execution(dev):
    reply = dev.request("start-next", {"clientToken": "tok-1"})
    assert reply.accepted and reply.topic == dev.prefix + "start-next/accepted"
    assert set(reply.payload) == {"timestamp", "clientToken"}
    assert reply.payload["clientToken"] == "tok-1" and _is_int_seconds(reply.payload["timestamp"])


def test_get_pending_always_has_both_lists(dev):
    reply = dev.request("get")
    assert reply.payload["inProgressJobs"] == [] and reply.payload["queuedJobs"] == []


def test_describe_next_with_nothing_pending_has_no_execution(dev):
    reply = dev.request("$next/get")
    assert reply.accepted and "execution" not in reply.payload


def test_new_job_notifies_and_becomes_next(aws, dev):
    job_id = _job(aws, dev, {"operation": "demo", "n": 7}, wait=False)
    notify = dev.expect("notify")
    assert list(notify["jobs"]) == ["QUEUED"]
    (summary,) = notify["jobs"]["QUEUED"]
    assert summary["jobId"] == job_id and "status" not in summary and "startedAt" not in summary
    assert summary["versionNumber"] == 1 and summary["executionNumber"] == 1
    nxt = dev.expect("notify-next")
    execution = nxt["execution"]
    assert execution["status"] == "QUEUED" and execution["jobDocument"] == {"operation": "demo", "n": 7}
    assert "thingName" not in execution and "statusDetails" not in execution and "startedAt" not in execution
    assert all(_is_int_seconds(execution[k]) for k in ("queuedAt", "lastUpdatedAt"))
    assert "clientToken" not in nxt and _is_int_seconds(nxt["timestamp"])


def test_second_job_notifies_but_head_is_unchanged(aws, dev):
    first = _job(aws, dev)
    dev.expect("notify-next")
    second = _job(aws, dev, wait=False)
    notify = dev.expect("notify")
    assert [s["jobId"] for s in notify["jobs"]["QUEUED"]] == [first, second]
    assert "notify-next" not in _quiet(dev)


def test_start_next_starts_the_head_silently_and_is_idempotent(aws, dev):
    job_id = _job(aws, dev)
    dev.expect("notify-next")
    dev.drain()
    reply = dev.request("start-next", {"statusDetails": {"step": "one"}, "stepTimeoutInMinutes": 5})
    execution = reply.payload["execution"]
    assert execution["jobId"] == job_id and execution["status"] == "IN_PROGRESS"
    assert execution["versionNumber"] == 2 and execution["statusDetails"] == {"step": "one"}
    assert (
        _is_int_seconds(execution["startedAt"]) and 0 < execution["approximateSecondsBeforeTimedOut"] <= 300
    )
    assert _quiet(dev) == []  # neither notify nor notify-next: the head did not change
    again = dev.request("start-next", {"statusDetails": {"step": "two"}})
    assert again.payload["execution"]["versionNumber"] == 2
    assert again.payload["execution"]["statusDetails"] == {"step": "one"}


def test_describe_a_job_and_next(aws, dev):
    job_id = _job(aws, dev, {"operation": "x"})
    reply = dev.request(f"{job_id}/get", {"includeJobDocument": False})
    assert reply.payload["execution"]["jobId"] == job_id and "jobDocument" not in reply.payload["execution"]
    full = dev.request(f"{job_id}/get", {"executionNumber": 1})
    assert full.payload["execution"]["jobDocument"] == {"operation": "x"}
    nxt = dev.request("$next/get")
    assert nxt.payload["execution"]["jobId"] == job_id and nxt.payload["execution"]["status"] == "QUEUED"
    missing = dev.request("no-such-job/get")
    assert missing.code == "ResourceNotFound" and "executionState" not in missing.payload
    assert dev.request(f"{job_id}/get", {"executionNumber": 9}).code == "ResourceNotFound"


def test_update_minimal_then_with_state_and_document(aws, dev):
    job_id = _job(aws, dev, {"operation": "y"})
    reply = dev.request(f"{job_id}/update", {"status": "IN_PROGRESS", "expectedVersion": "1"})
    assert reply.accepted and set(reply.payload) == {"timestamp", "clientToken"}
    reply = dev.request(
        f"{job_id}/update",
        {
            "status": "IN_PROGRESS",
            "statusDetails": {"progress": "50"},
            "includeJobExecutionState": True,
            "includeJobDocument": True,
        },
    )
    assert reply.payload["executionState"] == {
        "status": "IN_PROGRESS",
        "statusDetails": {"progress": "50"},
        "versionNumber": 3,
    }
    assert reply.payload["jobDocument"] == {"operation": "y"}


def test_version_mismatch_carries_the_execution_state(aws, dev):
    job_id = _job(aws, dev)
    reply = dev.request(f"{job_id}/update", {"status": "IN_PROGRESS", "expectedVersion": 99})
    assert reply.code == "VersionMismatch"
    assert reply.payload["executionState"] == {"status": "QUEUED", "versionNumber": 1}
    assert reply.payload["clientToken"].startswith(dev.name)


def test_terminal_update_notifies_and_moves_next(aws, dev):
    first, second = _job(aws, dev), _job(aws, dev)
    assert dev.request("start-next").payload["execution"]["jobId"] == first
    dev.drain()
    reply = dev.request(f"{first}/update", {"status": "SUCCEEDED", "statusDetails": {"result": "ok"}})
    assert reply.accepted
    notify = dev.expect("notify")
    assert [s["jobId"] for s in notify["jobs"]["QUEUED"]] == [second] and "IN_PROGRESS" not in notify["jobs"]
    assert dev.expect("notify-next")["execution"]["jobId"] == second
    again = dev.request(f"{first}/update", {"status": "IN_PROGRESS"})
    assert again.code == "InvalidStateTransition"
    assert again.payload["executionState"] == {
        "status": "SUCCEEDED",
        "statusDetails": {"result": "ok"},
        "versionNumber": 3,
    }
    assert dev.request(f"{second}/update", {"status": "REJECTED"}).accepted  # QUEUED -> terminal
    assert dev.expect("notify")["jobs"] == {}
    assert dev.expect("notify-next") == {"timestamp": pytest.approx(reply.payload["timestamp"], abs=5)}


def test_starting_a_non_head_job_makes_it_the_head(aws, dev):
    first, second = _job(aws, dev), _job(aws, dev)
    dev.drain()
    assert dev.request(f"{second}/update", {"status": "IN_PROGRESS"}).accepted
    nxt = dev.expect("notify-next")
    assert nxt["execution"]["jobId"] == second and nxt["execution"]["versionNumber"] == 2
    assert "notify" not in _quiet(dev)  # the pending set did not change
    pending = dev.request("get").payload
    assert [s["jobId"] for s in pending["inProgressJobs"]] == [second]
    assert [s["jobId"] for s in pending["queuedJobs"]] == [first]
    assert dev.request("start-next").payload["execution"]["jobId"] == second


@pytest.mark.parametrize(
    "request_body",
    [
        {},
        {"status": None},
        {"status": "CANCELED"},
        {"status": "TIMED_OUT"},
        {"status": "BOGUS"},
        {"status": "SUCCEEDED", "statusDetails": {f"k{i}": "v" for i in range(11)}},
        {"status": "SUCCEEDED", "statusDetails": {"bad key": "v"}},
        {"status": "SUCCEEDED", "statusDetails": {"k": ""}},
        {"status": "SUCCEEDED", "statusDetails": {"k": "x" * 1025}},
        {"status": "SUCCEEDED", "statusDetails": {"k": "line\nbreak"}},
        {"status": "SUCCEEDED", "statusDetails": {"k": 5}},
        {"status": "SUCCEEDED", "statusDetails": "text"},
        {"status": "IN_PROGRESS", "stepTimeoutInMinutes": 0},
        {"status": "IN_PROGRESS", "stepTimeoutInMinutes": 10081},
        {"status": "IN_PROGRESS", "expectedVersion": "one"},
        {"status": "IN_PROGRESS", "includeJobDocument": "yes"},
        {"status": "IN_PROGRESS", "clientToken": "x" * 65},
    ],
)
def test_invalid_updates_are_rejected_with_invalid_request(aws, dev, request_body):
    job_id = _job(aws, dev)
    token = request_body.pop("clientToken", None)
    if token:  # an over-long token cannot be echoed: send it raw and read the rejection
        dev.publish(f"{job_id}/update", {**request_body, "clientToken": token})
        rejected = dev.expect(f"{job_id}/update/rejected")
        assert rejected["code"] == "InvalidRequest" and "clientToken" not in rejected
        return
    reply = dev.request(f"{job_id}/update", request_body)
    assert reply.code == "InvalidRequest", reply.payload
    assert "executionState" not in reply.payload
    assert dev.request(f"{job_id}/get").payload["execution"]["versionNumber"] == 1  # nothing changed


def test_statusdetails_at_the_limits_are_accepted(aws, dev):
    job_id = _job(aws, dev)
    details = {f"k:{i}_-": "x" * 1024 for i in range(10)}
    assert dev.request(f"{job_id}/update", {"status": "IN_PROGRESS", "statusDetails": details}).accepted


def test_queued_is_not_a_device_transition(aws, dev):
    job_id = _job(aws, dev)
    reply = dev.request(f"{job_id}/update", {"status": "QUEUED"})
    assert reply.code == "InvalidStateTransition" and reply.payload["executionState"]["status"] == "QUEUED"


def test_update_of_an_unknown_job_is_resource_not_found(dev):
    assert dev.request("nope/update", {"status": "SUCCEEDED"}).code == "ResourceNotFound"


def test_invalid_json_has_no_client_token(dev):
    for payload in (b"{not json", b"[1, 2]", b"\xff\xfe", b""):
        dev.publish("start-next", payload)
        rejected = dev.expect("start-next/rejected")
        assert rejected["code"] == "InvalidJson" and set(rejected) == {"code", "message", "timestamp"}


def test_invalid_topic(dev):
    dev.publish("some-job/frobnicate", {"clientToken": "t-topic"})
    rejected = dev.expect("some-job/frobnicate/rejected")
    assert rejected["code"] == "InvalidTopic" and rejected["clientToken"] == "t-topic"
    dev.publish("$next/update", {"status": "SUCCEEDED"})
    assert dev.expect("$next/update/rejected")["code"] == "InvalidTopic"


def test_a_job_named_get_does_not_break_get_pending(aws, dev):
    aws.create_job("get", {"a": 2}, [dev.name])
    pending = dev.request("get").payload
    assert "inProgressJobs" in pending and "queuedJobs" in pending
    described = dev.request("get/get")
    assert described.accepted and described.payload["execution"]["jobId"] == "get"


def test_at_most_ten_pending_are_listed(aws, dev):
    jobs = [_job(aws, dev, wait=False) for _ in range(12)]
    pending = dev.request("get").payload
    assert [s["jobId"] for s in pending["queuedJobs"]] == jobs[:10]
    last = dev.expect("notify")  # notify lists at most 10 as well
    while sum(map(len, last["jobs"].values())) < 10:
        last = dev.expect("notify")
    assert [s["jobId"] for s in last["jobs"]["QUEUED"]] == jobs[:10]


def test_expected_version_as_string_and_number(aws, dev):
    job_id = _job(aws, dev)
    assert dev.request(f"{job_id}/update", {"status": "IN_PROGRESS", "expectedVersion": "1"}).accepted
    assert dev.request(f"{job_id}/update", {"status": "SUCCEEDED", "expectedVersion": 2}).accepted
