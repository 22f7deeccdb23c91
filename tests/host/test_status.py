"""`python -m tools.status`: against the stand-in for real, and its boto3 calls against AWS's shapes.

The stand-in answers every API the tool uses (ListThings, GetThingConnectivityData, the
retained-message API, the jobs APIs). What only AWS does — fleet indexing not enabled, answers
paged with nextToken, the iot-data endpoint from DescribeEndpoint — is checked with botocore's
Stubber holding AWS-shaped responses.
"""

import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from tools import status
from tools.standin import StandIn, retained
from tools.standin.device import Device

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    with StandIn(tmp_path_factory.mktemp("standin")) as stand_in:
        yield stand_in


def _status(aws, *args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "tools.status", "--standin", str(aws.folder), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=timeout,
    )  # fmt: skip


def _wait(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_status_of_the_stand_in_shows_connections_telemetry_jobs_and_details(aws):
    online = Device.connect(aws, "st-online")
    gone = Device.connect(aws, "st-gone")
    aws.thing("st-never", "ec")
    try:
        gone.close()  # a clean DISCONNECT
        telemetry = {"uptime": 42, "app": "1.2.3", "jobs_ok": 3}
        online.client.publish(
            "logi2/device/st-online", json.dumps(telemetry), qos=1, retain=True
        ).wait_for_publish(5)
        online.client.publish("logi2/device/st-online", b'{"uptime": 43}', qos=0)  # not retained: not "last"
        aws.create_job("st-job-1", {"operation": "x"}, ["st-online"])
        aws.create_job("st-job-2", {"operation": "y"}, ["st-online", "st-gone"])
        assert online.request(
            "start-next", {"statusDetails": {"step": "flashing", "progress": "40"}}
        ).accepted
        _wait(lambda: aws.engine.get_thing_connectivity_data("st-gone")["connected"] is False)
        _wait(lambda: retained.list_retained(aws.store)["retainedTopics"])

        out = _status(aws, "--json")
        assert out.returncode == 0, out.stderr
        snapshot = json.loads(out.stdout)
        things = {t["thing"]: t for t in snapshot["things"]}
        assert things["st-online"]["connected"] is True
        assert things["st-online"]["telemetry"]["values"] == telemetry
        assert things["st-gone"]["connected"] is False
        assert things["st-gone"]["disconnectReason"] == "CLIENT_INITIATED_DISCONNECT"
        assert things["st-never"] == {"thing": "st-never", "connected": False, "since": None,
                                      "disconnectReason": None, "telemetry": None}  # fmt: skip
        jobs = {j["jobId"]: j for j in snapshot["jobs"]}
        assert [j["jobId"] for j in snapshot["jobs"]][:2] == ["st-job-2", "st-job-1"]  # newest first
        (running,) = jobs["st-job-1"]["executions"]
        assert running["status"] == "IN_PROGRESS"
        assert running["statusDetails"] == {"step": "flashing", "progress": "40"}
        assert {e["thing"]: e["status"] for e in jobs["st-job-2"]["executions"]} == {
            "st-online": "QUEUED",
            "st-gone": "QUEUED",
        }

        table = _status(aws, "--once")
        assert table.returncode == 0, table.stderr
        line = next(x for x in table.stdout.splitlines() if x.startswith("st-online ") and "ago" in x)
        assert "yes" in line and "uptime=42" in line and "app=1.2.3" in line
        assert any("st-gone" in x and "CLIENT_INITIATED_DISCONNECT" in x for x in table.stdout.splitlines())
        assert any(
            x.startswith("st-job-1 ") and "IN_PROGRESS" in x and "step=flashing progress=40" in x
            for x in table.stdout.splitlines()
        )
    finally:
        online.close()


def test_status_redraws_live_as_the_job_moves(aws):
    dev = Device.connect(aws, "st-live")
    command = [
        sys.executable,
        "-m",
        "tools.status",
        "--standin",
        str(aws.folder),
        "--interval",
        "0.3",
        "--jobs",
        "1",
    ]
    view = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        aws.create_job("st-live-job", {"operation": "x"}, ["st-live"])
        frames = _frames(view, lambda f: "st-live-job" in f and "QUEUED" in f)
        assert dev.request("start-next").accepted
        assert dev.request(
            "st-live-job/update", {"status": "SUCCEEDED", "statusDetails": {"ok": "yes"}}
        ).accepted
        frames = _frames(view, lambda f: "SUCCEEDED" in f and "ok=yes" in f)
        assert frames[-1].startswith("THINGS")
    finally:
        view.terminate()
        view.wait(10)
        dev.close()


def _frames(view, done, timeout=20.0) -> list:
    """Read the live view's output until a frame satisfies `done`."""
    text = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text += view.stdout.readline()
        frames = [f for f in text.split("\x1b[H\x1b[2J") if f.strip()]
        complete = frames[:-1]  # the last one may still be arriving
        if any(done(f) for f in complete):
            return complete
    raise AssertionError(f"no such frame in {text[-2000:]!r}")


def test_a_missing_stand_in_is_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "tools.status", "--standin", str(tmp_path / "none"), "--once"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1 and "no stand-in facts" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def _aws_clients():
    """boto3 clients for AWS (never called: every answer comes from the Stubber)."""
    common = {"region_name": "eu-west-1", "aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "x"}
    iot = boto3.client("iot", **common)
    data = boto3.client("iot-data", endpoint_url="https://example-ats.iot.eu-west-1.amazonaws.com", **common)
    return iot, data


def test_boto3_calls_against_aws_shaped_answers():
    iot, data = _aws_clients()
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    arn = "arn:aws:iot:eu-west-1:111122223333:thing/"
    with Stubber(iot) as iot_stub, Stubber(data) as data_stub:
        # AWS pages the retained topics
        data_stub.add_response(
            "list_retained_messages",
            {
                "retainedTopics": [
                    {
                        "topic": "logi2/device/aws-1",
                        "payloadSize": 20,
                        "qos": 0,
                        "lastModifiedTime": 1767323045000,
                    }
                ],
                "nextToken": "page-2",
            },  # fmt: skip
            {},
        )
        data_stub.add_response(
            "list_retained_messages",
            {"retainedTopics": [{"topic": "other/topic", "payloadSize": 2, "qos": 1, "lastModifiedTime": 1}]},
            {"nextToken": "page-2"},
        )
        iot_stub.add_response(
            "list_things",
            {
                "things": [
                    {"thingName": "aws-1", "thingArn": arn + "aws-1"},
                    {"thingName": "aws-2", "thingArn": arn + "aws-2"},
                ]
            },  # fmt: skip
            {},
        )
        iot_stub.add_response(
            "get_thing_connectivity_data",
            {"thingName": "aws-1", "connected": True, "timestamp": when},
            {"thingName": "aws-1"},
        )
        data_stub.add_response(
            "get_retained_message",
            {
                "topic": "logi2/device/aws-1",
                "payload": b'{"uptime": 7}',
                "qos": 0,
                "lastModifiedTime": 1767323045000,
            },
            {"topic": "logi2/device/aws-1"},
        )
        # fleet indexing with thing connectivity not enabled in this account: AWS says so
        iot_stub.add_client_error(
            "get_thing_connectivity_data",
            service_error_code="IndexNotReadyException",
            service_message="Thing connectivity indexing is not enabled",
            http_status_code=400,
            expected_params={"thingName": "aws-2"},
        )
        iot_stub.add_response(
            "list_jobs",
            {
                "jobs": [
                    {"jobId": "old", "status": "COMPLETED", "createdAt": when},
                    {
                        "jobId": "new",
                        "status": "IN_PROGRESS",
                        "createdAt": when + datetime.timedelta(hours=1),
                    },
                ]
            },  # fmt: skip
            {},
        )
        iot_stub.add_response(
            "list_job_executions_for_job",
            {
                "executionSummaries": [
                    {"thingArn": arn + "aws-1", "jobExecutionSummary": {"status": "IN_PROGRESS"}}
                ]
            },  # fmt: skip
            {"jobId": "new"},
        )
        iot_stub.add_response(
            "describe_job_execution",
            {
                "execution": {
                    "jobId": "new",
                    "status": "IN_PROGRESS",
                    "executionNumber": 1,
                    "versionNumber": 3,
                    "lastUpdatedAt": when,
                    "statusDetails": {"detailsMap": {"progress": "55"}},
                }
            },  # fmt: skip
            {"jobId": "new", "thingName": "aws-1"},
        )
        snapshot = status.collect(iot, data, jobs=1)
        iot_stub.assert_no_pending_responses()
        data_stub.assert_no_pending_responses()
    one, two = snapshot["things"]
    assert one["connected"] is True and one["telemetry"] == {"at": 1767323045.0, "values": {"uptime": 7}}
    assert two["connected"] is None and two["telemetry"] is None
    assert two["error"].startswith("IndexNotReadyException")
    assert [j["jobId"] for j in snapshot["jobs"]] == ["new"]  # the newest only
    assert snapshot["jobs"][0]["executions"][0]["statusDetails"] == {"progress": "55"}
    assert "unknown (IndexNotReadyException" in status.render(snapshot)
