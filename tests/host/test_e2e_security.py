"""End to end: who may talk to whom, and that no key material ever leaves the device.

Refused: a device whose certificate comes from another CA; a broker whose certificate (from the
right CA) names another host; a client without a certificate; thing A's certificate asking for
thing B's jobs. And nothing the devices of this module print or publish (every message on
`$aws/things/#` and `logi2/#`, seen with the service identity, plus every device log) contains
any of their private keys, as DER bytes, hex, base64 or PEM.
"""

import base64
import datetime
import shutil
import ssl
import time

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.host.e2e import Rig, wait_until
from tools import certs
from tools.broker import Broker


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    rig = Rig(tmp_path_factory.mktemp("e2e-security")).start()
    rig.wiretap = rig.sniffer("$aws/things/#", "logi2/#")
    rig.keys = {}  # thing -> DER private key of every device this module ran
    rig.logs = []  # and the devices, for their logs
    yield rig
    rig.wiretap.stop()
    rig.stop()


@pytest.fixture(autouse=True)
def _clean(rig):
    yield
    for device in rig.devices:
        rig.keys[device.name] = (device.root / "certs" / "device.key.der").read_bytes()
        rig.logs.append(device)
    rig.stop_devices()


def connect_failures(dev, count: int = 2) -> None:
    failed = "mqtt: connect to localhost:"
    wait_until(lambda: dev.output().count(failed) >= count, 20, f"{count} refused connects")


def test_a_certificate_from_another_ca_is_refused(rig, tmp_path):
    rogue_ca = certs.make_ca(tmp_path / "rogue", "ca")
    rogue = certs.make_device(rogue_ca, tmp_path / "rogue", "sec-rogue", kind="ec")
    rig.aws.engine.create_thing("sec-rogue")
    dev = rig.provision("sec-rogue", ident=rogue)
    dev.job("rogue-1", {"operation": "gpio.write", "pin": "LED", "value": 1})
    dev.start()
    connect_failures(dev)
    assert "engine: connected" not in dev.output()
    assert dev.execution("rogue-1")["status"] == "QUEUED"
    assert dev.pins_log() == []
    assert "as sec-rogue" not in rig.aws.broker.log.read_text()  # never got past TLS
    assert "certificate verify failed" in rig.aws.broker.log.read_text()
    assert dev.problems() == []


def _server_cert_for(name: str, ca: certs.Identity, folder):
    """A server certificate from the stand-in's own CA, for another host name."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key_pem.read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "server.cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def test_a_broker_whose_certificate_names_another_host_is_refused(rig, tmp_path):
    # a second mosquitto: same CA, same ACLs, but its certificate is for wrong.example
    pki = tmp_path / "broker" / "pki"
    pki.mkdir(parents=True)
    for suffix in ("cert.pem", "key.pem"):
        shutil.copyfile(rig.aws.ca.cert_pem.parent / f"ca.{suffix}", pki / f"ca.{suffix}")
    _server_cert_for("wrong.example", rig.aws.ca, pki)
    impostor = Broker(tmp_path / "broker")
    impostor.prepare()
    impostor.start()
    try:
        ident = rig.aws.thing("sec-host", "ec")
        # the impostor is otherwise sound: a client that skips the name check gets in
        probe = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sec-host-probe")
        context = ssl.create_default_context(cafile=str(rig.aws.ca.cert_pem))
        context.check_hostname = False
        context.load_cert_chain(ident.cert_pem, ident.key_pem)
        probe.tls_set_context(context)
        assert probe.connect("localhost", impostor.port) == 0
        probe.disconnect()
        dev = rig.provision("sec-host", ident=ident, port=impostor.port)
        dev.start()
        connect_failures(dev)
        assert "engine: connected" not in dev.output()
        where = f"mqtt: connect to localhost:{impostor.port} failed"
        assert where + " (TLS: The certificate Common Name (CN) does not match" in dev.output()
        assert "as sec-host " not in impostor.log.read_text()  # only the probe got in
        assert dev.problems() == []  # refused with backoff, not a crash loop
    finally:
        impostor.stop()


def test_a_client_without_a_certificate_is_refused(rig):
    connacks = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sec-nocert")
    client.tls_set(ca_certs=str(rig.aws.ca.cert_pem), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.on_connect = lambda c, u, flags, reason, props: connacks.append(reason)
    lost = None
    try:
        client.connect("localhost", rig.aws.port)
        deadline = time.monotonic() + 5
        while lost is None and time.monotonic() < deadline:
            code = client.loop(timeout=0.1)  # TLS 1.3: the refusal arrives after the handshake
            if code != mqtt.MQTT_ERR_SUCCESS:
                lost = code
    except (ssl.SSLError, OSError) as error:
        lost = error
    assert lost is not None and connacks == []
    wait_until(
        lambda: "peer did not return a certificate" in rig.aws.broker.log.read_text(),
        5,
        "the broker's refusal",
    )


def test_thing_a_certificate_cannot_reach_thing_b_jobs(rig):
    ident_a = rig.aws.thing("sec-a", "ec")
    rig.aws.thing("sec-b", "ec")
    mark = len(rig.wiretap.seen())
    # a device that holds A's certificate but says it is B
    dev = rig.provision("sec-b-impostor", ident=ident_a, thing_name="sec-b", request_timeout_ms=500)
    rig.aws.create_job("b-1", {"operation": "gpio.write", "pin": "LED", "value": 1}, ["sec-b"])
    dev.start()
    wait_until(lambda: dev.output().count("start-next no answer") >= 2, 20, "two unanswered start-next")
    assert rig.aws.describe_execution("b-1", "sec-b")["status"] == "QUEUED"
    # its requests never reached anyone (the broker drops them), and nothing of B reached it
    published = [t for t, _ in rig.wiretap.seen()[mark:] if t.startswith("$aws/things/sec-b/jobs/start-next")]
    assert published == []
    assert dev.pins_log() == []
    dev.stop()
    # B's own device (its own certificate) gets the job
    real_b = rig.provision("sec-b", ident=certs.load(rig.aws.broker.folder / "pki", "sec-b"))
    real_b.start()
    assert real_b.result("b-1")["status"] == "SUCCEEDED"


def test_no_key_material_in_anything_the_devices_print_or_publish(rig):
    dev = rig.device("sec-leak", telemetry_interval_s=1)
    jobs = [
        {"operation": "diag.echo", "message": "hello"},
        {"operation": "config.set", "values": {"key": "certs/device.key.der"}},
        {"operation": "file.download", "url": "https://localhost:1/k", "path": "certs/device.key.der",
         "sha256": "0" * 64},
        {"operation": "file.download", "url": "https://localhost:1/k", "path": "k.der", "sha256": "0" * 64},
        {"operation": "system.reboot"},
    ]  # fmt: skip
    for i, doc in enumerate(jobs):
        assert dev.result(dev.job(f"leak-{i}", doc)["jobId"])["status"] in ("SUCCEEDED", "FAILED", "REJECTED")
    wait_until(lambda: rig.wiretap.seen("logi2/device/sec-leak"), 10, "telemetry")
    rig.stop_devices()
    rig.keys[dev.name] = (dev.root / "certs" / "device.key.der").read_bytes()
    rig.logs.append(dev)
    assert len(rig.keys) >= 4  # this module's other devices too
    haystack = b"\n".join(p for _, p in rig.wiretap.seen())
    haystack += b"\n".join(d.output().encode() for d in rig.logs)
    haystack += rig.aws.broker.log.read_bytes()
    assert b'"heap_free"' in haystack and b"leak-4" in haystack  # telemetry and jobs traffic were seen
    for thing, key in rig.keys.items():
        # the PEM a dump of this very DER file would give (the device's key is PKCS#1/SEC1 DER)
        pem = serialization.load_der_private_key(key, None).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        assert sum(needle in pem for needle in _forms(key)) > 10  # the search would see a PEM dump
        for needle in _forms(key):
            assert needle not in haystack, f"key material of {thing} found: {needle[:24]!r}..."


def _forms(key: bytes):
    """Windows of a DER private key as raw bytes, hex (both cases), base64 and PEM body."""
    size = 16
    for start in range(0, len(key) - size, 8):
        window = key[start : start + size]
        yield window
        yield window.hex().encode()
        yield window.hex().upper().encode()
    b64 = base64.b64encode(key)
    for start in range(0, len(b64) - 24, 4):
        yield b64[start : start + 24]
