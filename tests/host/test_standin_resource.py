"""The `needs=standin` resource device tests use, and the stand-in's own HTTP extensions."""

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import _Resources

THING_ARN = "arn:aws:iot:us-east-1:123456789012:thing/mp-thing-1"


@pytest.fixture(scope="module")
def env():
    resources = _Resources()
    try:
        yield resources.env(["standin"])
    finally:
        resources.stop()


def _call(env, method, path, body=None):
    request = urllib.request.Request(
        env["MPTEST_STANDIN_CONTROL"] + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read() or b"{}"), dict(answer.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}"), dict(err.headers)


def test_resource_gives_things_with_certificates(env):
    things = env["MPTEST_STANDIN_THINGS"].split(",")
    assert "mp-thing-rsa" in things
    for thing in things:
        for suffix in (".cert.der", ".key.der", ".cert.pem"):
            assert (Path(env["MPTEST_STANDIN_PKI"]) / (thing + suffix)).is_file()


def test_unsigned_http_creates_jobs_as_a_micropython_test_would(env):
    status, made, _ = _call(
        env,
        "PUT",
        "/jobs/mp-job-1",
        {"targets": [THING_ARN], "document": '{"op":"x"}'},
    )
    assert status == 200 and made["jobId"] == "mp-job-1"
    status, described, _ = _call(env, "GET", "/things/mp-thing-1/jobs/mp-job-1")
    assert status == 200 and described["execution"]["status"] == "QUEUED"
    status, error, headers = _call(env, "GET", "/jobs/missing")
    assert status == 404 and headers["x-amzn-ErrorType"] == "ResourceNotFoundException"


def test_extensions_issue_things_and_change_settings(env):
    status, issued, _ = _call(env, "POST", "/standin/things/mp-extra?kind=ec")
    assert status == 200 and issued["certificateDer"].endswith("mp-extra.cert.der")
    assert _call(env, "GET", "/things/mp-extra")[0] == 200
    status, settings, _ = _call(env, "PUT", "/standin/settings", {"minute_seconds": 1})
    assert status == 200 and settings["minute_seconds"] == 1
    status, _, headers = _call(env, "PUT", "/standin/settings", {"nonsense": 1})
    assert status == 400 and headers["x-amzn-ErrorType"] == "InvalidRequestException"
    assert _call(env, "POST", "/standin/things/jobs-service")[0] == 400


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("PUT", "/jobs/shape-1", {"targets": THING_ARN, "document": "{}"}),
        ("PUT", "/jobs/shape-2", {"targets": [THING_ARN],
                                  "document": "{}", "presignedUrlConfig": "x"}),
        ("PUT", "/jobs/shape-3", {"targets": [THING_ARN],
                                  "document": {"not": "a string"}}),
        ("GET", "/things/mp-thing-1/jobs/mp-job-1?executionNumber=abc", None),
        ("GET", "/jobs?maxResults=0", None),
        ("PUT", "/things/mp-thing-1/jobs/mp-job-1/cancel", {"statusDetails": {"k": 5}}),
    ],
)  # fmt: skip
def test_malformed_requests_get_invalid_request(env, method, path, body):
    status, error, headers = _call(env, method, path, body)
    assert status == 400, error
    assert headers["x-amzn-ErrorType"] == "InvalidRequestException" and "Traceback" not in error["message"]


def test_body_that_is_not_json(env):
    request = urllib.request.Request(env["MPTEST_STANDIN_CONTROL"] + "/jobs/x", method="PUT", data=b"{oops")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 400 and err.value.headers["x-amzn-ErrorType"] == "InvalidRequestException"
