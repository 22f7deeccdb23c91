"""Code signing end to end: a key and certificate made with the openssl CLI, a file signed with
`openssl dgst`, `make provision --codesign-cert`, and the device's check (jobs.ops.codesign) in
MicroPython over the provisioned folder. Also every bad certificate gets its one-line reason."""

import datetime
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import run_micropython
from tools import certs, deploy, provision

CERT_CONFIG = """\
[ req ]
prompt             = no
distinguished_name = my_dn

[ my_dn ]
commonName = signer@example.com

[ my_exts ]
keyUsage         = digitalSignature
extendedKeyUsage = codeSigning
"""

DEVICE_CHECK = """
import json, sys
from jobs import config, ecdsa, ops
from jobs.ops import codesign
root, path, signature = sys.argv[1:4]
class Board:
    pass
class Job:
    pass
job = Job()
job.board = Board()
job.board.root = root
with open(root + "/config.json") as f:
    job.config = config.validate(json.load(f))
key = codesign.key(job)
try:
    codesign.check_file(key, path, signature, bytearray(4096))
    print("RESULT verified")
except ops.Failed as failed:
    print("RESULT failed:", failed.args[0])
"""


def openssl(*args, cwd: Path) -> str:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def signer(tmp_path_factory):
    """The commands docs/operations.md gives: a P-256 key, its code-signing certificate, a signature."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("signer")
    (folder / "cert_config.txt").write_text(CERT_CONFIG)
    (folder / "app.bin").write_bytes(bytes(range(256)) * 400 + b"tail")
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "codesign.key", cwd=folder)
    openssl(
        *("req", "-new", "-x509", "-config", "cert_config.txt", "-extensions", "my_exts", "-nodes"),
        *("-days", "365", "-key", "codesign.key", "-out", "codesign.crt"),
        cwd=folder,
    )
    openssl("dgst", "-sha256", "-sign", "codesign.key", "-out", "app.sig", "app.bin", cwd=folder)
    signature = openssl("base64", "-A", "-in", "app.sig", cwd=folder).strip()
    return {"folder": folder, "cert": folder / "codesign.crt", "signature": signature}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    root = certs.make_ca(folder, "root")
    return {"root": root, "device": certs.make_device(root, folder, "thing-1"), "folder": folder}


def provision_cli(pki, out: Path, codesign: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            *("-m", "tools.provision", "--thing", "thing-1", "--endpoint", "localhost", "--board", "unix"),
            *("--cert", str(pki["device"].cert_pem), "--key", str(pki["device"].key_pem)),
            *("--ca", str(pki["root"].cert_pem), "--out", str(out), "--codesign-cert", str(codesign)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def device_check(out: Path, path: Path, signature: str) -> str:
    proc = run_micropython(["-c", DEVICE_CHECK, str(out), str(path), signature], timeout=60)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout + proc.stderr
    return lines[0][len("RESULT ") :]


def test_openssl_signed_file_verifies_on_the_device_after_provisioning(signer, pki, tmp_path):
    out = tmp_path / "out"
    result = provision_cli(pki, out, signer["cert"])
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["codesign_key"] == "certs/codesign.pub"
    cert = x509.load_pem_x509_certificate(signer["cert"].read_bytes())
    point = cert.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert (out / "certs" / "codesign.pub").read_bytes() == point[1:]
    app = signer["folder"] / "app.bin"
    assert device_check(out, app, signer["signature"]) == "verified"
    changed = tmp_path / "changed.bin"
    data = bytearray(app.read_bytes())
    data[5000] ^= 0x40
    changed.write_bytes(data)
    assert device_check(out, changed, signer["signature"]) == (
        "failed: sig-sha256-ecdsa: signature does not match the file and the code-signing key"
    )


def test_without_codesign_cert_nothing_changes(pki, tmp_path):
    inputs = provision.Inputs(
        thing="thing-1",
        endpoint="localhost",
        cert=pki["device"].cert_pem,
        key=pki["device"].key_pem,
        ca=pki["root"].cert_pem,
        board="unix",
    )
    written = provision.provision(inputs, tmp_path)
    assert "codesign_key" not in json.loads((tmp_path / "config.json").read_text())
    assert not (tmp_path / "certs" / "codesign.pub").exists()
    assert tmp_path / "certs" / "codesign.pub" not in written


def _self_signed(folder: Path, key, name: str) -> Path:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    path = folder / f"{name}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_other_forms_of_the_p256_key_are_taken(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )[1:]
    pem = _self_signed(tmp_path, key, "p256")
    der = tmp_path / "p256.der"
    der.write_bytes(x509.load_pem_x509_certificate(pem.read_bytes()).public_bytes(serialization.Encoding.DER))
    public = tmp_path / "p256.pub.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    for path in (pem, der, public):
        assert provision.codesign_point(path) == (point, None), path


def test_a_bad_codesign_cert_is_one_line_and_nothing_is_written(pki, tmp_path):
    rsa_cert = pki["device"].cert_pem
    p384 = _self_signed(tmp_path, ec.generate_private_key(ec.SECP384R1()), "p384")
    private = tmp_path / "codesign.key"
    private.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate\n")
    cases = {
        rsa_cert: "holds an RSA key; sig-sha256-ecdsa needs EC P-256 (prime256v1)",
        p384: "holds an EC secp384r1 key; sig-sha256-ecdsa needs EC P-256 (prime256v1)",
        private: "is a private key: give the certificate; the key stays with the signer",
        garbage: "is not an X.509 certificate (PEM or DER) or a PEM public key",
        tmp_path / "missing.crt": "cannot read",
    }
    for path, expected in cases.items():
        out = tmp_path / ("out-" + path.name)
        result = provision_cli(pki, out, path)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        problems = [line for line in result.stderr.splitlines() if "nothing written" not in line]
        assert len(problems) == 1, result.stderr
        assert problems[0].startswith("provision: code-signing certificate: ") and str(path) in problems[0]
        assert expected in problems[0], problems[0]
        assert not out.exists()


def test_deploy_carries_the_codesign_key(signer, pki, tmp_path):
    out = tmp_path / "out"
    assert provision_cli(pki, out, signer["cert"]).returncode == 0
    tree = deploy.stage(out, "unix", tmp_path / "stage")
    assert tree["/certs/codesign.pub"].read_bytes() == (out / "certs" / "codesign.pub").read_bytes()
