"""End to end: AWS IoT OTA updates (CreateOTAUpdate, the afr_ota job document) on the firmware.

Real stand-in (mosquitto + mTLS, the Jobs service answering the stream topics, the presigned-URL
file server, the control plane with its local signing profile), firmware/main.py on the
MicroPython Unix port (tests/host/e2e.py): over the MQTT stream with no HTTPS connection, over
HTTP, a bad signature, a power cut mid-stream, the Jobs service killed mid-stream, and a thing
asking for another thing's stream.
"""

import base64
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from tests.host.e2e import ROLE, Rig, aws_cli, create_update, details, ota_device, ota_file, put_file
from tests.host.test_signing import CERT_CONFIG
from tools.simdevice import app_image

BLOCK = 4096


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    rig = Rig(tmp_path_factory.mktemp("e2e-afr")).start()
    yield rig
    rig.stop()


@pytest.fixture(autouse=True)
def _switch_off(rig):
    yield
    rig.stop_devices()


class FileServerCount:
    """Connections the stand-in's HTTPS file server accepts (it runs in this process)."""

    def __init__(self, rig: Rig):
        self.count = 0
        self._lock = threading.Lock()
        self._servers = rig.aws.file_server.servers
        self._originals = [httpd.process_request for httpd in self._servers]
        for httpd, original in zip(self._servers, self._originals, strict=True):
            httpd.process_request = self._counting(original)

    def _counting(self, original):
        def process_request(request, address):
            with self._lock:
                self.count += 1
            return original(request, address)

        return process_request

    def close(self) -> None:
        for httpd, original in zip(self._servers, self._originals, strict=True):
            httpd.process_request = original


def requested_blocks(sniffer, thing: str) -> list[int]:
    """Every block id the device asked for in its GetStream requests (offset/count or bitmap)."""
    blocks = []
    for _topic, payload in sniffer.seen("/get/json"):
        request = json.loads(payload)
        offset = request.get("o", 0)
        if "b" in request:
            bits = bytes.fromhex(request["b"])
            ids = [offset + 8 * j + k for j, byte in enumerate(bits) for k in range(8) if byte >> k & 1]
            blocks += ids[: request["n"]] if "n" in request else ids
        else:
            blocks += range(offset, offset + request["n"])
    return blocks


def bitmap_blocks(journal: dict) -> set[int]:
    have = bytes.fromhex(journal["data"]["bitmap"])
    return {8 * j + k for j, byte in enumerate(have) for k in range(8) if byte >> k & 1}


def slot_bytes(dev, label: str, size: int) -> bytes:
    return (dev.root / "simboard" / f"{label}.bin").read_bytes()[:size]


def test_aws_cli_ota_update_over_mqtt_downloads_over_the_stream_reboots_self_tests_and_succeeds(rig):
    dev = ota_device(rig, "e2e-afr-mqtt")
    image = app_image(150 * 1024 + 77, "2.0.0")
    location = put_file(rig, "fw/afr-mqtt.bin", image)
    sniffer = rig.sniffer(
        f"$aws/things/{dev.name}/streams/+/data/json",
        f"$aws/things/{dev.name}/streams/+/get/json",
        f"$aws/things/{dev.name}/jobs/AFR_OTA-afr-mqtt/update",
    )
    https = FileServerCount(rig)
    try:
        made = aws_cli(
            rig.aws,
            "create-ota-update",
            "--ota-update-id",
            "afr-mqtt",
            "--role-arn",
            ROLE,
            "--targets",
            rig.aws.arn("thing", dev.name),
            "--protocols",
            "MQTT",
            "--files",
            json.dumps([ota_file(location)]),
        )
        assert made["awsIotJobId"] == "AFR_OTA-afr-mqtt"
        done = dev.result("AFR_OTA-afr-mqtt", timeout=40)
    finally:
        https.close()
        sniffer.stop()
    assert done["status"] == "SUCCEEDED", details(done)
    assert details(done) == {"reason": "accepted v2.0.0", "updatedBy": "v1.0.0"}
    assert https.count == 0  # the file server saw no connection: the stream was the only path
    blocks = -(-len(image) // BLOCK)
    assert sorted(json.loads(p)["i"] for _, p in sniffer.seen("/data/json")) == list(range(blocks))
    ota = dev.otadata()
    assert ota["running"] == "ota_1" and ota["slots"]["ota_1"] == {"state": "VALID", "version": "2.0.0"}
    assert slot_bytes(dev, "ota_1", len(image)) == image
    # the AWS OTA agent's statusDetails on the way: receive, self_test ready, then active, with updatedBy
    sent = [json.loads(p) for _, p in sniffer.seen("/update")]
    steps = [(u["status"], u.get("statusDetails", {})) for u in sent]
    assert ("IN_PROGRESS", {"self_test": "ready", "updatedBy": "0x01000000"}) in steps, steps
    assert ("IN_PROGRESS", {"self_test": "active", "updatedBy": "0x02000000"}) in steps, steps
    receive = [d["receive"] for st, d in steps if "receive" in d]
    assert receive and all(r.endswith(f"/{blocks}") for r in receive), receive
    ready = steps.index(("IN_PROGRESS", {"self_test": "ready", "updatedBy": "0x01000000"}))
    assert steps.index(("IN_PROGRESS", {"self_test": "active", "updatedBy": "0x02000000"})) > ready
    assert steps[-1] == ("SUCCEEDED", {"reason": "accepted v2.0.0", "updatedBy": "v1.0.0"})
    log = dev.output()
    assert "job AFR_OTA-afr-mqtt afr_ota SUCCEEDED" in log
    echo = dev.run("afr-mqtt-echo", {"operation": "diag.echo"})
    assert details(echo)["firmware"] == "2.0.0"
    assert dev.problems() == []


def test_an_ota_update_over_http_downloads_the_presigned_url_and_succeeds(rig):
    dev = ota_device(rig, "e2e-afr-http")
    image = app_image(64 * 1024 + 5, "1.1.0", seed=3)
    location = put_file(rig, "fw/afr-http.bin", image)
    https = FileServerCount(rig)
    try:
        job = create_update(rig, "afr-http", dev.name, [ota_file(location)], protocols=("HTTP",))
        done = dev.result(job, timeout=30)
    finally:
        https.close()
    assert done["status"] == "SUCCEEDED", details(done)
    assert details(done) == {"reason": "accepted v1.1.0", "updatedBy": "v1.0.0"}
    assert https.count >= 1
    assert slot_bytes(dev, "ota_1", len(image)) == image
    assert dev.otadata()["slots"]["ota_1"]["state"] == "VALID"


def test_a_bad_signature_fails_and_the_old_image_still_runs(rig):
    dev = ota_device(rig, "e2e-afr-badsig")
    image = app_image(40 * 1024, "3.0.0", seed=5)
    location = put_file(rig, "fw/afr-badsig.bin", image)
    other = ec.generate_private_key(ec.SECP256R1())  # not the key the device was provisioned with
    signature = base64.b64encode(other.sign(image, ec.ECDSA(hashes.SHA256()))).decode()
    signing = {
        "customCodeSigning": {
            "signature": {"inlineDocument": signature},
            "certificateChain": {"certificateName": "someone-else.crt"},
            "hashAlgorithm": "SHA256",
            "signatureAlgorithm": "ECDSA",
        }
    }
    job = create_update(rig, "afr-badsig", dev.name, [ota_file(location, signing=signing)])
    done = dev.result(job, timeout=30)
    assert done["status"] == "FAILED"
    reason = details(done)["reason"]
    assert reason == "sig-sha256-ecdsa: signature does not match the file and the code-signing key", reason
    ota = dev.otadata()
    assert ota["running"] == "ota_0" and ota["boot"] == "ota_0"
    assert slot_bytes(dev, "ota_1", 1) == b"\xff"  # spoiled: it can never pass set_boot()
    echo = dev.run("afr-badsig-echo", {"operation": "diag.echo"})
    assert details(echo)["firmware"] == "1.0.0"


@pytest.fixture
def slow_stream(rig):
    """Every answer of the service 30 ms late: a 1 MiB download takes over a second (32 windows),
    so a test acts while it is under way."""
    rig.faults(response_delay=0.03)
    yield
    rig.faults()


def test_a_power_cut_mid_stream_resumes_from_the_checkpoint_without_fetching_blocks_again(rig, slow_stream):
    dev = ota_device(rig, "e2e-afr-cut")
    image = app_image(1024 * 1024 + 300, "2.1.0", seed=9)
    blocks = -(-len(image) // BLOCK)
    location = put_file(rig, "fw/afr-cut.bin", image)
    job = create_update(rig, "afr-cut", dev.name, [ota_file(location)])
    dev.wait_journal(lambda j: "bitmap" in j.get("data", {}), timeout=20, what="a stream checkpoint")
    dev.kill()  # power cut
    kept = bitmap_blocks(dev.journal())
    assert 0 < len(kept) < blocks, len(kept)
    sniffer = rig.sniffer(f"$aws/things/{dev.name}/streams/+/get/json")
    try:
        dev.start()
        done = dev.result(job, timeout=40)
    finally:
        sniffer.stop()
    assert done["status"] == "SUCCEEDED", details(done)
    asked = requested_blocks(sniffer, dev.name)
    assert not kept & set(asked), sorted(kept & set(asked))[:10]
    assert set(asked) == set(range(blocks)) - kept
    assert slot_bytes(dev, "ota_1", len(image)) == image


def test_the_jobs_service_killed_mid_stream_is_survived(rig, slow_stream):
    dev = ota_device(rig, "e2e-afr-service")
    image = app_image(1024 * 1024, "2.2.0", seed=11)
    location = put_file(rig, "fw/afr-service.bin", image)
    job = create_update(rig, "afr-service", dev.name, [ota_file(location)])
    dev.wait_journal(lambda j: "bitmap" in j.get("data", {}), timeout=20, what="a stream checkpoint")
    rig.aws.stop_service()  # SIGKILL: what it had not sent yet is lost
    kept = bitmap_blocks(dev.journal())
    assert len(kept) < -(-len(image) // BLOCK)
    dev.wait_log("no answer; asking again")  # the device saw the outage mid-stream
    rig.aws.start_service()
    done = dev.result(job, timeout=60)
    assert done["status"] == "SUCCEEDED", details(done)
    assert slot_bytes(dev, "ota_1", len(image)) == image
    assert dev.problems() == []


class Intruder:
    """Another thing's MQTT client (its own certificate) on the victim's stream topics."""

    def __init__(self, rig: Rig, name: str, victim: str):
        ident = rig.aws.thing(name, "ec")
        self.messages: list = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name)
        self.client.tls_set(
            ca_certs=str(rig.aws.ca.cert_pem),
            certfile=str(ident.cert_pem),
            keyfile=str(ident.key_pem),
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        self.client.on_message = lambda c, u, m: self.messages.append(m.topic)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("localhost", rig.aws.port)
        self.client.loop_start()
        self.client.subscribe(f"$aws/things/{victim}/streams/#", 1)
        assert subscribed.wait(10)
        self.victim = victim

    def ask(self, stream: str) -> None:
        for api, body in (("describe", {"c": "x"}), ("get", {"c": "x", "f": 0, "l": 4096, "n": 4})):
            info = self.client.publish(
                f"$aws/things/{self.victim}/streams/{stream}/{api}/json", json.dumps(body), 1
            )
            info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_thing_asking_for_another_things_stream_gets_nothing(rig):
    dev = ota_device(rig, "e2e-afr-victim")
    image = app_image(24 * 1024 + 1, "2.0.1", seed=13)
    location = put_file(rig, "fw/afr-victim.bin", image)
    sniffer = rig.sniffer(f"$aws/things/{dev.name}/streams/#")
    intruder = Intruder(rig, "e2e-afr-intruder", dev.name)
    try:
        job = create_update(rig, "afr-victim", dev.name, [ota_file(location)])
        stream = json.loads(rig.aws.engine.get_job_document(job)["document"])["afr_ota"]["streamname"]
        intruder.ask(stream)
        done = dev.result(job, timeout=30)
        intruder.ask(stream)
        time.sleep(0.5)
    finally:
        intruder.close()
        sniffer.stop()
    assert done["status"] == "SUCCEEDED", details(done)
    assert intruder.messages == []  # nothing of the victim's stream reached the other thing
    # and the service answered only the victim's own requests: one data message per block asked
    data = [json.loads(p)["i"] for _, p in sniffer.seen("/data/json")]
    assert sorted(data) == sorted(requested_blocks(sniffer, dev.name)) == list(range(-(-len(image) // BLOCK)))
    assert all(json.loads(p)["c"] != "x" for _, p in sniffer.seen("/data/json"))


def test_application_files_over_the_stream_are_staged_swapped_and_committed(rig):
    dev = ota_device(rig, "e2e-afr-app")
    source = b'"""An application file delivered by an AWS IoT OTA update."""\nVERSION = "afr"\n' * 40
    location = put_file(rig, "app/afr_app.py", source)
    job = create_update(rig, "afr-app", dev.name, [ota_file(location, file_type=1, name="afr_app.py")])
    done = dev.result(job, timeout=30)
    assert done["status"] == "SUCCEEDED", details(done)
    assert details(done) == {"reason": "accepted AFR_OTA-afr-app", "updatedBy": "none"}
    state = json.loads((dev.root / "app" / "app.json").read_text())
    assert state["version"] == job and state["state"] == "VALID"
    assert (dev.root / "app" / state["dir"] / "afr_app.py").read_bytes() == source
    assert dev.otadata()["running"] == "ota_0"  # the firmware was not touched


# The sequence docs/tooling.md gives ("An AWS IoT OTA update"), as a user types it, with the
# stand-in's control plane as the endpoint and its files folder as the bucket.
DOCUMENTED = """
set -e
openssl dgst -sha256 -sign codesign.key -out fw.sig micropython.bin
SIG=$(openssl base64 -A -in fw.sig)
aws iot create-stream --stream-id fw-2-0-0 --role-arn arn:aws:iam::123456789012:role/ota \\
  --files '[{"fileId":0,"s3Location":{"bucket":"my-bucket","key":"fw/micropython-2.0.0.bin"}}]'
aws iot create-ota-update --ota-update-id fw-2-0-0 --role-arn arn:aws:iam::123456789012:role/ota \\
  --targets arn:aws:iot:us-east-1:123456789012:thing/$THING --protocols MQTT \\
  --files '[{"fileName":"micropython.bin","fileType":0,
             "fileLocation":{"stream":{"streamId":"fw-2-0-0","fileId":0}},
             "codeSigning":{"customCodeSigning":{"signature":{"inlineDocument":"'"$SIG"'"},
               "certificateChain":{"certificateName":"codesign.crt"},
               "hashAlgorithm":"SHA256","signatureAlgorithm":"ECDSA"}}}]'
aws iot get-ota-update --ota-update-id fw-2-0-0 --query otaUpdateInfo.[otaUpdateStatus,awsIotJobId]
"""


def test_the_documented_command_sequence_signs_streams_and_updates_a_device(rig, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    work = tmp_path / "signer"
    work.mkdir()
    (work / "cert_config.txt").write_text(CERT_CONFIG)
    for command in (
        "openssl ecparam -name prime256v1 -genkey -noout -out codesign.key",
        "openssl req -new -x509 -config cert_config.txt -extensions my_exts -nodes -days 365"
        " -key codesign.key -out codesign.crt",
    ):
        subprocess.run(command.split(), cwd=work, check=True, capture_output=True, timeout=30)
    image = app_image(90 * 1024 + 9, "2.0.0", seed=21)
    (work / "micropython.bin").write_bytes(image)
    put_file(rig, "fw/micropython-2.0.0.bin", image)  # what `aws s3 cp` does on AWS
    dev = ota_device(rig, "e2e-afr-documented", codesign_cert=work / "codesign.crt")
    bin_dir = tmp_path / "bin"  # `aws` there is aws-cli with the stand-in's endpoint
    bin_dir.mkdir()
    aws = bin_dir / "aws"
    aws.write_text(
        f'#!/bin/sh\nexec {Path(sys.executable).parent / "aws"} --endpoint-url {rig.aws.control_url} "$@"\n'
    )
    aws.chmod(0o755)
    env = dict(
        os.environ,
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        THING=dev.name,
        AWS_ACCESS_KEY_ID="local",
        AWS_SECRET_ACCESS_KEY="local",
        AWS_DEFAULT_REGION="us-east-1",
    )
    out = subprocess.run(
        ["bash", "-c", DOCUMENTED], cwd=work, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert '"CREATE_COMPLETE"' in out.stdout and '"AFR_OTA-fw-2-0-0"' in out.stdout, out.stdout
    done = dev.result("AFR_OTA-fw-2-0-0", timeout=30)
    assert done["status"] == "SUCCEEDED", details(done)
    assert details(done) == {"reason": "accepted v2.0.0", "updatedBy": "v1.0.0"}
