"""Presigned URLs (fresh per delivery, served over HTTPS with Range), managed templates, the CLI."""

import itertools
import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tools.standin import StandIn
from tools.standin.core import ApiError
from tools.standin.device import Device

ROOT = Path(__file__).resolve().parent.parent.parent
_NAMES = itertools.count(1)
PLACEHOLDER = "${aws:iot:s3-presigned-url:https://s3.us-east-1.amazonaws.com/firmware-bucket/app/v2.bin}"


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    with StandIn(tmp_path_factory.mktemp("standin")) as stand_in:
        (stand_in.files / "app").mkdir(parents=True, exist_ok=True)
        (stand_in.files / "app" / "v2.bin").write_bytes(bytes(range(256)) * 40)
        yield stand_in


@pytest.fixture
def dev(aws):
    device = Device.connect(aws, f"docs-{next(_NAMES)}")
    yield device
    device.close()


def _fetch(aws, url: str, headers=None):
    context = ssl.create_default_context(cafile=str(aws.ca.cert_pem))
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_presigned_url_is_fresh_on_every_delivery_and_downloadable(aws, dev):
    job_id = f"ota-{next(_NAMES)}"
    aws.create_job(job_id, {"operation": "ota", "url": PLACEHOLDER, "size": 10240}, [dev.name])
    urls = [dev.expect("notify-next")["execution"]["jobDocument"]["url"]]
    urls.append(dev.request("$next/get").payload["execution"]["jobDocument"]["url"])
    urls.append(dev.request("start-next").payload["execution"]["jobDocument"]["url"])
    urls.append(dev.request(f"{job_id}/get").payload["execution"]["jobDocument"]["url"])
    assert len(set(urls)) == 4
    for url in urls:
        assert url.startswith(aws.files_url + "/app/v2.bin?") and "X-Amz-Signature=" in url
    status, headers, body = _fetch(aws, urls[0])
    assert status == 200 and body == bytes(range(256)) * 40 and headers["Accept-Ranges"] == "bytes"
    status, headers, body = _fetch(aws, urls[1], {"Range": "bytes=256-511"})
    assert status == 206 and body == bytes(range(256)) and headers["Content-Range"] == "bytes 256-511/10240"
    status, _, body = _fetch(aws, urls[2], {"Range": "bytes=-16"})
    assert status == 206 and body == bytes(range(240, 256))
    assert _fetch(aws, urls[2], {"Range": "bytes=20000-"})[0] == 416
    raw = aws.engine.get_job_document(job_id, before_substitution=True)["document"]
    assert PLACEHOLDER in raw


def test_file_server_refuses_forged_expired_and_missing(aws, dev):
    job_id = f"ota-{next(_NAMES)}"
    aws.create_job(job_id, {"url": PLACEHOLDER}, [dev.name], presigned_expires=60)
    url = dev.request("start-next").payload["execution"]["jobDocument"]["url"]
    forged = url.rsplit("=", 1)[0] + "=" + "0" * 32
    assert _fetch(aws, forged)[0] == 403
    assert _fetch(aws, url.replace("v2.bin", "other.bin"))[0] == 403  # signature is for another key
    with aws.store.transaction() as db:  # age the signature past its expiry
        db.execute("UPDATE presigned SET expires = 0 WHERE token = ?", (url.rsplit("=", 1)[1],))
    status, _, body = _fetch(aws, url)
    assert status == 403 and b"expired" in body


def test_presigned_placeholder_needs_presigned_url_config(aws, dev):
    with pytest.raises(ApiError) as err:
        aws.engine.create_job(
            "no-config", {"targets": [aws.arn("thing", dev.name)], "document": json.dumps({"u": PLACEHOLDER})}
        )
    assert err.value.error_type == "InvalidRequestException"


def test_managed_template_download_file(aws, dev):
    job_id = f"dl-{next(_NAMES)}"
    aws.create_job(
        job_id,
        None,
        [dev.name],
        template="AWS-Download-File",
        parameters={"downloadUrl": 'https://example.com/a "b".bin', "filePath": "/data/b.bin"},
    )
    document = dev.request("start-next").payload["execution"]["jobDocument"]
    action = document["steps"][0]["action"]
    assert document["version"] == "1.0" and action["name"] == "Download-File"
    assert action["type"] == "runHandler" and action["input"]["handler"] == "download-file.sh"
    assert action["input"]["args"] == ['https://example.com/a "b".bin', "/data/b.bin"]
    assert action["runAsUser"] == "" and "${" not in json.dumps(document)
    job = aws.describe_job(job_id)
    assert job["jobTemplateArn"].endswith(":jobtemplate/AWS-Download-File:1.0")
    assert job["documentParameters"]["filePath"] == "/data/b.bin"
    raw = aws.engine.get_job_document(job_id, before_substitution=True)["document"]
    assert "${aws:iot:parameter:downloadUrl}" in raw


@pytest.mark.parametrize(
    "template, parameters, handler",
    [
        ("AWS-Reboot", {}, "reboot.sh"),
        ("AWS-Install-Application", {"packages": "a b"}, "install-packages.sh"),
        ("AWS-Remove-Application", {"packages": "a"}, "remove-packages.sh"),
        ("AWS-Start-Application", {"services": "s"}, "start-services.sh"),
        ("AWS-Stop-Application", {"services": "s"}, "stop-services.sh"),
        ("AWS-Restart-Application", {"services": "s", "runAsUser": "root"}, "restart-services.sh"),
        ("AWS-Run-Command", {"command": "ls,-l"}, None),
    ],
)
def test_every_managed_template(aws, dev, template, parameters, handler):
    job_id = f"tpl-{next(_NAMES)}"
    aws.create_job(job_id, None, [dev.name], template=template, parameters=parameters)
    action = json.loads(aws.engine.get_job_document(job_id)["document"])["steps"][0]["action"]
    if handler:
        assert action["input"]["handler"] == handler
        assert action["input"].get("args", []) == [v for k, v in parameters.items() if k != "runAsUser"]
    else:
        assert action["type"] == "runCommand" and action["input"]["command"] == "ls,-l"
    assert action["runAsUser"] == parameters.get("runAsUser", "")


@pytest.mark.parametrize(
    "body, error_type",
    [
        (
            {"jobTemplateArn": "arn:aws:iot:us-east-1::jobtemplate/AWS-Download-File:1.0"},
            "InvalidRequestException",
        ),
        (
            {
                "jobTemplateArn": "arn:aws:iot:us-east-1::jobtemplate/AWS-Reboot:1.0",
                "documentParameters": {"x": "1"},
            },
            "InvalidRequestException",
        ),
        ({"jobTemplateArn": "arn:aws:iot:us-east-1::jobtemplate/AWS-Nope:1.0"}, "ResourceNotFoundException"),
        ({"document": "{}", "documentParameters": {"a": "b"}}, "InvalidRequestException"),
        ({"document": "not json"}, "InvalidRequestException"),
        ({"document": "[1]"}, "InvalidRequestException"),
        ({"document": json.dumps({"x": "y" * 33000})}, "InvalidRequestException"),
        ({}, "InvalidRequestException"),
    ],
)
def test_bad_create_job_gets_aws_errors(aws, dev, body, error_type):
    with pytest.raises(ApiError) as err:
        aws.engine.create_job(f"bad-{next(_NAMES)}", {"targets": [aws.arn("thing", dev.name)], **body})
    assert err.value.error_type == error_type


def _cli(aws, *args):
    return subprocess.run(
        [sys.executable, "-m", "tools.standin", *args, "--state", str(aws.folder)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_cli_operates_jobs(aws, dev):
    job_id = f"cli-{next(_NAMES)}"
    made = _cli(aws, "create-job", job_id, "--thing", dev.name, "--document", '{"operation":"cli"}')
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["jobId"] == job_id
    assert dev.expect("notify-next")["execution"]["jobId"] == job_id  # published by the service
    assert dev.request("start-next", {"statusDetails": {"step": "flashing"}}).accepted
    table = _cli(aws, "watch", "--once")
    line = next(x for x in table.stdout.splitlines() if x.startswith(job_id))
    assert dev.name in line and "IN_PROGRESS" in line and "step=flashing" in line
    described = json.loads(_cli(aws, "describe-execution", job_id, dev.name).stdout)
    assert described["execution"]["status"] == "IN_PROGRESS"
    refused = _cli(aws, "cancel-execution", job_id, dev.name)
    assert refused.returncode == 1 and "InvalidStateTransitionException" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert _cli(aws, "cancel-execution", job_id, dev.name, "--force").returncode == 0
    listed = json.loads(_cli(aws, "list-executions", "--job", job_id).stdout)
    assert listed["executionSummaries"][0]["jobExecutionSummary"]["status"] == "CANCELED"
    document = json.loads(_cli(aws, "get-document", job_id).stdout)["document"]
    assert json.loads(document) == {"operation": "cli"}
    assert json.loads(_cli(aws, "describe-job", job_id).stdout)["job"]["status"] == "COMPLETED"
    jobs = json.loads(_cli(aws, "list-jobs", "--status", "COMPLETED").stdout)["jobs"]
    assert job_id in [j["jobId"] for j in jobs] and all(j["status"] == "COMPLETED" for j in jobs)
    assert job_id not in [
        j["jobId"] for j in json.loads(_cli(aws, "list-jobs", "--status", "CANCELED").stdout)["jobs"]
    ]
    things = json.loads(_cli(aws, "list-things").stdout)["things"]
    assert dev.name in [t["thingName"] for t in things]
    assert next(t for t in things if t["thingName"] == dev.name)["thingArn"] == aws.arn("thing", dev.name)


def test_cli_bad_arguments_say_what_is_wrong(aws, tmp_path):
    missing = _cli(aws, "describe-job", "no-such-job")
    assert missing.returncode == 1 and "ResourceNotFoundException" in missing.stderr
    unknown = _cli(aws, "settings", "bogus=1")
    assert unknown.returncode != 0 and "unknown setting" in unknown.stderr
    nowhere = subprocess.run(
        [sys.executable, "-m", "tools.standin", "describe-job", "x", "--state", str(tmp_path / "none")],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert (
        nowhere.returncode != 0
        and "no stand-in state" in nowhere.stderr
        and "Traceback" not in nowhere.stderr
    )
