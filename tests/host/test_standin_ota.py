"""Streams and OTA updates: the control plane (boto3, aws-cli) and MQTT-based file delivery (paho)."""

import base64
import itertools
import json
import os
import queue
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import paho.mqtt.client as mqtt
import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from tests.host.e2e import aws_cli as _aws_cli
from tools.standin import StandIn, signing
from tools.standin import files as standin_files
from tools.standin.streams import StreamApi

ROOT = Path(__file__).resolve().parent.parent.parent
ROLE = "arn:aws:iam::123456789012:role/ota-role"
_IDS = itertools.count(1)


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    with StandIn(tmp_path_factory.mktemp("standin")) as stand_in:
        yield stand_in


@pytest.fixture(scope="module")
def iot(aws):
    return boto3.client(
        "iot",
        endpoint_url=aws.control_url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )


def _file(aws, key: str, size: int) -> bytes:
    data = os.urandom(size)
    path = aws.files / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def _code(err) -> str:
    return err.value.response["Error"]["Code"]


def _stream(iot, aws, size: int = 5000, files=None) -> tuple:
    stream_id = f"stream-{next(_IDS)}"
    key = f"fw/{stream_id}.bin"
    data = _file(aws, key, size)
    iot.create_stream(
        streamId=stream_id,
        roleArn=ROLE,
        description="firmware",
        files=files or [{"fileId": 0, "s3Location": {"bucket": "fw-bucket", "key": key}}],
    )
    return stream_id, data


class Thing:
    """A paho device subscribed to its own stream topics (and optionally others')."""

    def __init__(self, aws, name: str, extra=()):
        self.name = name
        ident = aws.thing(name, "ec")
        self.messages: queue.Queue = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name)
        self.client.tls_set(
            ca_certs=str(aws.ca.cert_pem),
            certfile=str(ident.cert_pem),
            keyfile=str(ident.key_pem),
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        subscribed = queue.Queue()
        self.client.on_subscribe = lambda *a: subscribed.put(True)
        self.client.connect("localhost", aws.port)
        self.client.loop_start()
        filters = [
            (f"$aws/things/{name}/streams/+/{kind}/json", 1) for kind in ("description", "data", "rejected")
        ]
        self.client.subscribe(filters + [(f, 1) for f in extra])
        subscribed.get(timeout=10)

    def ask(self, stream: str, api: str, request, fmt: str = "json") -> None:
        payload = request if isinstance(request, bytes) else json.dumps(request)
        self.client.publish(
            f"$aws/things/{self.name}/streams/{stream}/{api}/{fmt}", payload, qos=1
        ).wait_for_publish(5)

    def answers(self, count: int = 1, timeout: float = 10.0, settle: float = 0.0) -> list:
        got, deadline = [], time.monotonic() + timeout
        while len(got) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: {len(got)} of {count} answers: {got}")
            try:
                topic, payload = self.messages.get(timeout=left)
            except queue.Empty:
                continue
            got.append((topic.rsplit("/", 2)[-2], json.loads(payload)))
        if settle:
            time.sleep(settle)
            while not self.messages.empty():
                topic, payload = self.messages.get()
                got.append((topic.rsplit("/", 2)[-2], json.loads(payload)))
        return got

    def rejected(self, stream: str, api: str, request, fmt: str = "json") -> dict:
        self.ask(stream, api, request, fmt)
        ((kind, answer),) = self.answers()
        assert kind == "rejected", answer
        return answer

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def thing(aws):
    device = Thing(aws, f"ota-thing-{next(_IDS)}")
    yield device
    device.close()


# ----- control plane -----------------------------------------------------------------------
def test_stream_control_plane_shapes_and_errors(aws, iot):
    stream_id, _ = _stream(iot, aws, 3000)
    info = iot.describe_stream(streamId=stream_id)["streamInfo"]
    assert info["streamArn"] == f"arn:aws:iot:us-east-1:123456789012:stream/{stream_id}"
    assert (info["streamVersion"], info["description"], info["roleArn"]) == (1, "firmware", ROLE)
    assert info["files"] == [
        {"fileId": 0, "s3Location": {"bucket": "fw-bucket", "key": f"fw/{stream_id}.bin"}}
    ]
    assert info["createdAt"] <= info["lastUpdatedAt"]
    second, _ = _stream(iot, aws, 100)
    listed = [s["streamId"] for s in iot.list_streams()["streams"]]
    assert listed.index(second) < listed.index(stream_id)  # newest first unless isAscendingOrder
    page = iot.list_streams(maxResults=1)
    assert len(page["streams"]) == 1 and page["nextToken"]
    _file(aws, "fw/other.bin", 10)
    updated = iot.update_stream(
        streamId=stream_id,
        description="v2",
        files=[{"fileId": 7, "s3Location": {"bucket": "b", "key": "fw/other.bin"}}],
    )
    assert updated["streamVersion"] == 2 and updated["description"] == "v2"
    assert iot.describe_stream(streamId=stream_id)["streamInfo"]["files"][0]["fileId"] == 7

    location = {"bucket": "b", "key": "fw/other.bin"}
    for kwargs, code in [
        (
            {"streamId": stream_id, "files": [{"fileId": 0, "s3Location": location}]},
            "ResourceAlreadyExistsException",
        ),
        ({"streamId": "bad id", "files": [{"fileId": 0, "s3Location": location}]}, "InvalidRequestException"),
        (
            {"streamId": "s-missing", "files": [{"fileId": 0, "s3Location": {"bucket": "b", "key": "nope"}}]},
            "ResourceNotFoundException",
        ),
        (
            {
                "streamId": "s-dup",
                "files": [{"fileId": 1, "s3Location": location}, {"fileId": 1, "s3Location": location}],
            },
            "InvalidRequestException",
        ),
    ]:
        with pytest.raises(ClientError) as err:
            iot.create_stream(roleArn=ROLE, **kwargs)
        assert _code(err) == code, kwargs
    iot.delete_stream(streamId=second)
    for call in (lambda: iot.describe_stream(streamId=second), lambda: iot.delete_stream(streamId=second)):
        with pytest.raises(ClientError) as err:
            call()
        assert _code(err) == "ResourceNotFoundException"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def _sign_der(data: bytes) -> tuple:
    """A user's own code-signing key: (base64 DER signature of data, public key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return base64.b64encode(key.sign(data, ec.ECDSA(hashes.SHA256()))).decode(), key.public_key()


def test_aws_cli_create_stream_and_ota_update_with_custom_signing(aws, iot, thing):
    data = _file(aws, "fw/cli.bin", 2000)
    made = _aws_cli(
        aws,
        "create-stream",
        "--stream-id",
        "cli-stream",
        "--role-arn",
        ROLE,
        "--files",
        json.dumps([{"fileId": 0, "s3Location": {"bucket": "b", "key": "fw/cli.bin"}}]),
    )
    assert made["streamVersion"] == 1
    assert iot.describe_stream(streamId="cli-stream")["streamInfo"]["files"][0]["fileId"] == 0
    assert "cli-stream" in [s["streamId"] for s in iot.list_streams()["streams"]]
    signature, public = _sign_der(data)
    files = [
        {
            "fileName": "/firmware.bin",
            "fileType": 0,
            "fileLocation": {"stream": {"streamId": "cli-stream", "fileId": 0}},
            "codeSigning": {
                "customCodeSigning": {
                    "signature": {"inlineDocument": signature},
                    "certificateChain": {"certificateName": "ota-signer.crt"},
                    "hashAlgorithm": "SHA256",
                    "signatureAlgorithm": "ECDSA",
                }
            },
        }
    ]
    created = _aws_cli(
        aws,
        "create-ota-update",
        "--ota-update-id",
        "cli-update",
        "--role-arn",
        ROLE,
        "--targets",
        aws.arn("thing", thing.name),
        "--protocols",
        "MQTT",
        "--files",
        json.dumps(files),
    )
    assert created["awsIotJobId"] == "AFR_OTA-cli-update" and created["otaUpdateStatus"] == "CREATE_PENDING"
    info = _aws_cli(aws, "get-ota-update", "--ota-update-id", "cli-update")["otaUpdateInfo"]
    assert info["otaUpdateStatus"] == "CREATE_COMPLETE" and info["awsIotJobId"] == "AFR_OTA-cli-update"
    document = json.loads(iot.get_job_document(jobId="AFR_OTA-cli-update")["document"])
    (entry,) = document["afr_ota"]["files"]
    assert document["afr_ota"]["protocols"] == ["MQTT"] and document["afr_ota"]["streamname"] == "cli-stream"
    assert entry == {
        "filepath": "/firmware.bin",
        "filesize": 2000,
        "fileid": 0,
        "certfile": "ota-signer.crt",
        "fileType": 0,
        "sig-sha256-ecdsa": signature,
    }
    public.verify(base64.b64decode(entry["sig-sha256-ecdsa"]), data, ec.ECDSA(hashes.SHA256()))
    assert "cli-update" in [u["otaUpdateId"] for u in iot.list_ota_updates()["otaUpdates"]]
    assert iot.update_stream(streamId="cli-stream", description="again")["streamVersion"] == 2
    with pytest.raises(ClientError) as err:  # its job is in progress
        iot.delete_stream(streamId="cli-stream")
    assert _code(err) == "DeleteConflictException"
    _aws_cli(
        aws, "delete-ota-update", "--ota-update-id", "cli-update", "--force-delete-aws-job", "--delete-stream"
    )
    with pytest.raises(ClientError):
        iot.describe_job(jobId="AFR_OTA-cli-update")
    with pytest.raises(ClientError):
        iot.describe_stream(streamId="cli-stream")


def test_ota_update_over_mqtt_makes_a_stream_and_the_device_downloads_it(aws, iot, thing):
    data = _file(aws, "fw/boto.bin", 70_000)
    _, public = _sign_der(data)
    der = base64.b64decode(_sign_der(data)[0])
    update = f"boto-{next(_IDS)}"
    iot.create_ota_update(
        otaUpdateId=update,
        targets=[aws.arn("thing", thing.name)],
        roleArn=ROLE,
        description="new firmware",
        files=[
            {
                "fileName": "app.bin",
                "fileType": 1,
                "fileLocation": {"s3Location": {"bucket": "b", "key": "fw/boto.bin"}},
                "codeSigning": {"customCodeSigning": {"signature": {"inlineDocument": der}}},
            }
        ],
        awsJobTimeoutConfig={"inProgressTimeoutInMinutes": 60},
    )
    info = iot.get_ota_update(otaUpdateId=update)["otaUpdateInfo"]
    assert info["otaUpdateStatus"] == "CREATE_COMPLETE" and info["protocols"] == ["MQTT"]
    job = iot.describe_job(jobId=f"AFR_OTA-{update}")["job"]
    assert job["description"] == "new firmware" and job["timeoutConfig"] == {"inProgressTimeoutInMinutes": 60}
    document = json.loads(iot.get_job_document(jobId=f"AFR_OTA-{update}")["document"])["afr_ota"]
    stream = document["streamname"]
    assert (
        stream.startswith("AFR_OTA-")
        and iot.describe_stream(streamId=stream)["streamInfo"]["files"][0]["fileId"] == 0
    )
    (entry,) = document["files"]
    assert (entry["fileid"], entry["filesize"], entry["fileType"]) == (0, 70_000, 1)
    assert base64.b64decode(entry["sig-sha256-ecdsa"]) == der  # raw DER given: base64 of it in the document
    assert "update_data_url" not in entry

    # the device: describe, then blocks of 4 KiB (17 of them, 128 KiB per request at most)
    thing.ask(stream, "describe", {"c": "d-1"})
    ((kind, described),) = thing.answers()
    assert kind == "description" and described == {
        "c": "d-1",
        "s": 1,
        "d": f"OTA update {update}",
        "r": [{"f": 0, "z": 70_000}],
    }
    thing.ask(stream, "get", {"c": "g-1", "s": 1, "f": 0, "l": 4096, "o": 0, "n": 32})
    blocks = thing.answers(18)
    assert all(kind == "data" and b["c"] == "g-1" and b["f"] == 0 for kind, b in blocks)
    assert [b["i"] for _, b in blocks] == list(range(18))
    assert [b["l"] for _, b in blocks] == [4096] * 17 + [70_000 - 17 * 4096]
    assert b"".join(base64.b64decode(b["p"]) for _, b in blocks) == data


def test_ota_update_over_http_signed_by_the_local_profile(aws, iot, thing):
    data = _file(aws, "fw/http.bin", 3000)
    update = f"http-{next(_IDS)}"
    streams_before = {s["streamId"] for s in iot.list_streams()["streams"]}
    iot.create_ota_update(
        otaUpdateId=update,
        targets=[aws.arn("thing", thing.name)],
        roleArn=ROLE,
        protocols=["HTTP"],
        files=[
            {
                "fileName": "/app/main.py",
                "fileLocation": {"s3Location": {"bucket": "b", "key": "fw/http.bin"}},
                "codeSigning": {
                    "startSigningJobParameter": {
                        "signingProfileName": signing.PROFILE,
                        "signingProfileParameter": {"certificatePathOnDevice": "certs/code-signing.der"},
                    }
                },
            }
        ],
        awsJobPresignedUrlConfig={"expiresInSec": 600},
    )
    assert {s["streamId"] for s in iot.list_streams()["streams"]} == streams_before  # HTTP only: no stream
    document = json.loads(aws.engine.get_job_document(f"AFR_OTA-{update}")["document"])["afr_ota"]
    assert "streamname" not in document and document["protocols"] == ["HTTP"]
    (entry,) = document["files"]
    assert entry["auth_scheme"] == "aws.s3.presigned" and entry["certfile"] == "certs/code-signing.der"
    assert signing.verify(aws.engine.signer().cert_pem, aws.files / "fw/http.bin", entry["sig-sha256-ecdsa"])
    assert not signing.verify(
        aws.engine.signer().cert_pem, aws.files / "fw/boto.bin", entry["sig-sha256-ecdsa"]
    )
    context = ssl.create_default_context(cafile=str(aws.ca.cert_pem))
    with urllib.request.urlopen(entry["update_data_url"], context=context, timeout=10) as answer:
        assert answer.read() == data
    raw = aws.engine.get_job_document(f"AFR_OTA-{update}", before_substitution=True)["document"]
    assert "${aws:iot:s3-presigned-url:https://s3.amazonaws.com/b/fw/http.bin}" in raw
    assert not (aws.folder / "signing" / "code-signing.key.pem").stat().st_mode & 0o077


def test_ota_update_failures_are_aws_errors_or_create_failed(aws, iot, thing):
    _file(aws, "fw/f.bin", 100)
    target = [aws.arn("thing", thing.name)]
    good = {"fileName": "f", "fileLocation": {"s3Location": {"bucket": "b", "key": "fw/f.bin"}}}

    def failed(update_id, files, targets=target):
        iot.create_ota_update(otaUpdateId=update_id, targets=targets, roleArn=ROLE, files=files)
        info = iot.get_ota_update(otaUpdateId=update_id)["otaUpdateInfo"]
        assert info["otaUpdateStatus"] == "CREATE_FAILED" and "awsIotJobId" not in info
        with pytest.raises(ClientError):
            iot.describe_job(jobId=f"AFR_OTA-{update_id}")
        return info["errorInfo"]

    profile = {**good, "codeSigning": {"startSigningJobParameter": {"signingProfileName": "prod-signer"}}}
    assert failed("f-profile", [profile])["code"] == "ResourceNotFoundException"
    missing = {"fileLocation": {"s3Location": {"bucket": "b", "key": "fw/none.bin"}}}
    assert "does not exist" in failed("f-file", [missing])["message"]
    nowhere = [aws.arn("thing", "no-such-thing")]
    assert failed("f-target", [good], nowhere)["code"] == "ResourceNotFoundException"
    assert [u["otaUpdateId"] for u in iot.list_ota_updates(otaUpdateStatus="CREATE_FAILED")["otaUpdates"]][
        :3
    ] == ["f-target", "f-file", "f-profile"]
    for kwargs, code in [
        ({"otaUpdateId": "f-profile", "files": [good]}, "ResourceAlreadyExistsException"),
        ({"otaUpdateId": "bad id!", "files": [good]}, "InvalidRequestException"),
        (
            {"otaUpdateId": "f-proto", "files": [good], "protocols": ["MQTT", "MQTT"]},
            "InvalidRequestException",
        ),
        ({"otaUpdateId": "f-type", "files": [{**good, "fileType": 300}]}, "InvalidRequestException"),
    ]:
        with pytest.raises(ClientError) as err:
            iot.create_ota_update(targets=target, roleArn=ROLE, **kwargs)
        assert _code(err) == code, kwargs
    iot.create_ota_update(otaUpdateId="f-busy", targets=target, roleArn=ROLE, files=[good])
    with pytest.raises(ClientError) as err:  # its execution is queued: AWS wants forceDeleteAWSJob
        iot.delete_ota_update(otaUpdateId="f-busy")
    assert _code(err) == "InvalidRequestException"
    iot.delete_ota_update(otaUpdateId="f-busy", forceDeleteAWSJob=True, deleteStream=True)
    with pytest.raises(ClientError) as err:
        iot.get_ota_update(otaUpdateId="f-busy")
    assert _code(err) == "ResourceNotFoundException"


# ----- data plane ---------------------------------------------------------------------------
def test_get_stream_bitmap_and_limits_as_aws_documents(aws, iot, thing):
    stream_id, data = _stream(iot, aws, 256 * 44 + 10)  # 45 blocks of 256 B, the last one 10 B
    # AWS's own example: blocks 20, 21, 24 and 43 as offset 20 and bitmap 0x130080
    thing.ask(stream_id, "get", {"c": "1", "s": 1, "l": 256, "f": 0, "o": 20, "n": 32, "b": "0x130080"})
    blocks = thing.answers(4, settle=0.3)
    assert [b["i"] for _, b in blocks] == [20, 21, 24, 43]
    assert base64.b64decode(blocks[3][1]["p"]) == data[43 * 256 : 44 * 256]
    thing.ask(stream_id, "get", {"f": 0, "l": 256, "o": 20, "n": 2, "b": "130080"})  # n caps a bitmap
    assert [b["i"] for _, b in thing.answers(2, settle=0.3)] == [20, 21]
    thing.ask(stream_id, "get", {"f": 0, "l": 256, "o": 44, "n": 5})  # clamped to the end of the file
    ((_, last),) = thing.answers(1, settle=0.3)
    assert last["i"] == 44 and last["l"] == 10 and "c" not in last

    big, _ = _stream(iot, aws, 200_000)
    thing.ask(big, "get", {"f": 0, "l": 256, "n": 1000})  # 128 KiB per request at most
    assert len(thing.answers(512, settle=0.5)) == 512


def test_every_stream_rejected_code(aws, iot, thing, monkeypatch):
    stream_id, _ = _stream(iot, aws, 1000)
    name = thing.name

    def code(request, api="get", stream=stream_id, fmt="json"):
        answer = thing.rejected(stream, api, request, fmt)
        assert set(answer) <= {"o", "m", "c"} and answer["m"]
        return answer["o"]

    assert code({"c": "x"}, api="bogus") == "InvalidTopic"
    assert code(b"{not json") == "InvalidJson"
    assert code(b"[1, 2]") == "InvalidJson"
    assert code({"f": 0, "l": 256}, fmt="cbor") == "InvalidCbor"
    assert code({"c": "x" * 65, "f": 0, "l": 256}) == "InvalidRequest"
    assert code({"l": 256}) == "InvalidRequest"
    assert code({"f": "0", "l": 256}) == "InvalidRequest"
    assert code({"f": 0, "l": 256, "b": "zz"}) == "InvalidRequest"
    assert code({"f": 0, "l": 255}) == "BlockSizeOutOfBounds"
    assert code({"f": 0, "l": 131073}) == "BlockSizeOutOfBounds"
    assert code({"f": 0, "l": 256, "o": 98305}) == "OffsetOutOfBounds"
    assert code({"f": 0, "l": 256, "n": 98305}) == "BlockCountLimitExceeded"
    assert code({"f": 0, "l": 256, "b": "01" * 12288}) == "BlockBitmapLimitExceeded"
    assert code({"f": 0, "l": 256}, stream="no-such-stream") == "ResourceNotFound"
    assert code({"c": "x"}, api="describe", stream="no-such-stream") == "ResourceNotFound"
    assert code({"f": 9, "l": 256}) == "ResourceNotFound"
    assert code({"f": 0, "l": 256, "o": 4}) == "ResourceNotFound"  # 1000 B: blocks 0-3 only
    assert code({"s": 2, "f": 0, "l": 256}) == "VersionMismatch"
    answer = thing.rejected(stream_id, "get", {"c": "tok", "s": 2, "f": 0, "l": 256})
    assert answer["c"] == "tok"  # the client token comes back with the error
    (aws.files / f"fw/{stream_id}.bin").write_bytes(b"replaced under the stream")
    assert code({"f": 0, "l": 256}) == "ETagMismatch"
    assert thing.messages.empty() and name

    # what cannot happen for real here, with the same code the service runs
    api = StreamApi(aws.store)
    settings = aws.engine.settings
    fresh, _ = _stream(iot, aws, 1000)
    topic = f"$aws/things/{name}/streams/{fresh}/get/json"

    def unreadable(*args):
        raise PermissionError("denied")

    with monkeypatch.context() as patch:  # the storage refuses the read: root cannot be denied a file
        patch.setattr(standin_files, "locate", unreadable)
        ((reply, answer),) = api.handle(topic, b'{"f": 0, "l": 256}', settings)
    assert reply.endswith("/rejected/json") and answer["o"] == "Unauthorized"
    api._blocks = lambda *args: 1 / 0  # a bug: answered, not raised
    ((reply, answer),) = api.handle(topic, b'{"c": "k", "f": 0, "l": 256}', settings)
    assert answer == {"o": "InternalError", "m": answer["m"], "c": "k"}


def test_a_thing_reaches_only_its_own_stream_topics(aws, iot, thing):
    stream_id, _ = _stream(iot, aws, 600)
    spy = Thing(aws, f"ota-spy-{next(_IDS)}", extra=[f"$aws/things/{thing.name}/streams/#"])
    try:
        spy.ask(stream_id, "describe", {"c": "mine"})  # its own topic: answered
        assert spy.answers()[0][0] == "description"
        # the victim's topics: the spy's request is dropped, the victim's answers never reach it
        spy.client.publish(
            f"$aws/things/{thing.name}/streams/{stream_id}/get/json",
            json.dumps({"c": "stolen", "f": 0, "l": 256}),
        ).wait_for_publish(5)
        thing.ask(stream_id, "get", {"c": "own", "f": 0, "l": 256})
        answers = thing.answers(3, settle=0.5)
        assert {b["c"] for _, b in answers} == {"own"}
        time.sleep(0.3)
        assert spy.messages.empty()
    finally:
        spy.close()


def test_cli_signs_with_the_local_profile(aws):
    _file(aws, "fw/cli-signed.bin", 1234)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.standin",
            "sign",
            str(aws.files / "fw/cli-signed.bin"),
            "--state",
            str(aws.folder),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    signed = json.loads(out.stdout)
    assert signed["profile"] == signing.PROFILE
    facts = json.loads((aws.folder / "standin.json").read_text())
    assert signed["certificate"] == facts["code_signing_cert"]
    assert signing.verify(
        Path(facts["code_signing_cert"]), aws.files / "fw/cli-signed.bin", signed["signature"]
    )
    missing = subprocess.run(
        [sys.executable, "-m", "tools.standin", "sign", "/no/such/file", "--state", str(aws.folder)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert missing.returncode != 0 and "is not a file" in missing.stderr and "Traceback" not in missing.stderr
