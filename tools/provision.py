"""`make provision`: turn the files AWS issues for a thing into the device's config and DER files.

Input: the thing's PEM certificate and private key, Amazon Root CA 1 (PEM), the endpoint and the
thing name; or, for the local stand-in, `--standin DIR`, which reads the endpoint, MQTT port and
CA (and the thing's certificate and key, if the stand-in issued them) from DIR/standin.json.
Output folder (default state/provision/<thing>/, mode 0700):

    config.json              thing_name, endpoint, port, ca, cert, key, board, wifi_ssid, wifi_password
    certs/ca.cert.der        the CA that signs the endpoint's server certificate
    certs/device.cert.der    the device certificate
    certs/device.key.der     its private key (PKCS#1 or SEC1 DER, mode 0600)
    certs/codesign.pub       with --codesign-cert: the 64-byte X||Y of the code-signing
                             certificate's P-256 public key (config key codesign_key)

Key names and file paths are those of lib/jobs/config.py (its SCHEMA and defaults); `ca`, `cert`,
`key` are paths relative to the device's root, in DER because MicroPython's TLS on many builds
parses only DER. The key is written in its traditional form (certs.device_key_der), which
MicroPython v1.23.0 reads too. Every input is checked first; each problem gets one sentence and
the exit status is 2. The Wi-Fi password is never printed; it may come from the environment
(WIFI_PASSWORD, which is how `make provision` passes it) so that it is on no command line. With
--create-in-aws the thing, its certificate and a least-privilege policy are created with boto3
instead of reading --cert/--key (needs AWS credentials; not run in the tests).

To add a file: a check that appends its problems to `Inputs.problems`, an `Output` in
`outputs()` and its key in `device_config()`.
"""

import argparse
import datetime
import ipaddress
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tools import certs
from tools.mpenv import as_typed

ROOT = Path(__file__).resolve().parent.parent
# device paths, relative to the board's root (lib/jobs/config.py defaults)
CA_FILE, CERT_FILE, KEY_FILE = "certs/ca.cert.der", "certs/device.cert.der", "certs/device.key.der"
CODESIGN_FILE = "certs/codesign.pub"
DEFAULT_PORT = 8883
# AWS thing names: 1-128 of letters, digits, ':', '_', '-'
THING_NAME = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
ATS_ENDPOINT = re.compile(r"^[a-z0-9]+-ats\.iot\.[a-z]{2}(-gov)?-[a-z]+-[0-9]\.amazonaws\.com(\.cn)?$")
LEGACY_ENDPOINT = re.compile(r"^[a-z0-9]+\.iot\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
LOCAL_ENDPOINTS = ("localhost", "127.0.0.1")
HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
PASSWORD_ENV = "WIFI_PASSWORD"


class ProvisionError(Exception):
    """One or more problems with the input; args[0] is the list of sentences."""


@dataclass
class Inputs:
    thing: str
    endpoint: str
    port: int = DEFAULT_PORT
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    board: str = "esp32"
    wifi_ssid: str = ""
    wifi_password: str = ""
    # the endpoint came from a stand-in's standin.json: any host name or address it listens on
    standin: bool = False
    codesign_cert: Path | None = None
    problems: list[str] = field(default_factory=list)


def known_boards(root: Path = ROOT) -> list[str]:
    return sorted(p.name for p in (root / "boards").iterdir() if p.is_dir() and p.name != "__pycache__")


def check_thing_name(name: str) -> str | None:
    if THING_NAME.match(name):
        return None
    return (
        f"thing name {name!r} is not valid: use 1 to 128 letters, digits, ':', '_' or '-' "
        "(the pattern AWS IoT accepts)"
    )


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def check_endpoint(endpoint: str, port: int, standin: bool = False) -> list[str]:
    problems = []
    if endpoint in LOCAL_ENDPOINTS:
        pass
    elif standin:
        if not (HOST_NAME.match(endpoint) or _is_address(endpoint)):
            problems.append(f"endpoint {endpoint!r} from the stand-in's standin.json is not a host name")
    elif LEGACY_ENDPOINT.match(endpoint) and "-ats." not in endpoint:
        problems.append(
            f"endpoint {endpoint!r} is a legacy (VeriSign) endpoint: use the ATS one, "
            "`aws iot describe-endpoint --endpoint-type iot:Data-ATS`, which Amazon Root CA 1 verifies"
        )
    elif not ATS_ENDPOINT.match(endpoint):
        problems.append(
            f"endpoint {endpoint!r} does not look like <prefix>-ats.iot.<region>.amazonaws.com "
            "(or localhost for the local stand-in)"
        )
    if port == 443:
        problems.append("port 443 needs ALPN, which MicroPython's TLS does not implement: use 8883")
    elif not 0 < port < 65536:
        problems.append(f"port {port} is not a TCP port number")
    return problems


def _read(path: Path | None, what: str, problems: list[str]) -> bytes | None:
    if path is None:
        problems.append(f"{what}: no file given")
        return None
    try:
        return path.read_bytes()
    except OSError as error:
        problems.append(f"{what}: cannot read {path}: {error.strerror or error}")
        return None


def _load_cert(data: bytes, path: Path, what: str, problems: list[str]) -> x509.Certificate | None:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        problems.append(f"{what}: {path} is not an X.509 certificate (PEM or DER)")
        return None


def _check_dates(cert: x509.Certificate, path: Path, what: str, now: datetime.datetime) -> list[str]:
    if cert.not_valid_after_utc <= now:
        return [f"{what}: {path} expired on {cert.not_valid_after_utc:%Y-%m-%d}"]
    if cert.not_valid_before_utc > now:
        return [f"{what}: {path} is not valid before {cert.not_valid_before_utc:%Y-%m-%d}"]
    return []


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _public_numbers(public_key):
    if isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return public_key.public_numbers()
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass
class Material:
    """The validated certificate, key and CA, ready to write as DER."""

    cert: x509.Certificate
    key: object
    ca: x509.Certificate


def check_material(inputs: Inputs, now: datetime.datetime | None = None) -> Material | None:
    """Validate certificate, key and CA; append a sentence to inputs.problems for each problem."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    problems = inputs.problems
    cert = key = ca = None
    data = _read(inputs.cert, "device certificate", problems)
    if data is not None:
        cert = _load_cert(data, inputs.cert, "device certificate", problems)
        if cert is not None:
            problems += _check_dates(cert, inputs.cert, "device certificate", now)
            if _is_ca(cert):
                problems.append(f"device certificate: {inputs.cert} is a CA certificate, not a device's")
    data = _read(inputs.key, "private key", problems)
    if data is not None:
        try:
            if b"-----BEGIN" in data:
                key = serialization.load_pem_private_key(data, password=None)
            else:
                key = serialization.load_der_private_key(data, password=None)
        except TypeError:
            problems.append(f"private key: {inputs.key} is encrypted: give the unencrypted key AWS issued")
        except ValueError:
            problems.append(f"private key: {inputs.key} is not a private key (PEM or DER)")
        if key is not None and not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            problems.append(f"private key: {inputs.key} is neither RSA nor EC, which mbedTLS needs")
            key = None
    if cert is not None and key is not None:
        if _public_numbers(cert.public_key()) != _public_numbers(key.public_key()):
            problems.append(f"private key: {inputs.key} does not match the certificate {inputs.cert}")
    data = _read(inputs.ca, "root CA", problems)
    if data is not None:
        ca = _load_cert(data, inputs.ca, "root CA", problems)
        if ca is not None:
            problems += _check_dates(ca, inputs.ca, "root CA", now)
            if not _is_ca(ca):
                problems.append(
                    f"root CA: {inputs.ca} is not a CA certificate (use AmazonRootCA1.pem, "
                    "https://www.amazontrust.com/repository/AmazonRootCA1.pem)"
                )
    if problems or cert is None or key is None or ca is None:
        return None
    return Material(cert, key, ca)


def check_wifi(ssid: str, password: str) -> list[str]:
    problems = []
    if len(ssid.encode()) > 32:
        problems.append(f"Wi-Fi SSID {ssid!r} is longer than 32 bytes")
    if password and not 8 <= len(password.encode()) <= 63:
        problems.append("Wi-Fi password must be 8 to 63 characters (WPA2), or empty for an open network")
    if password and not ssid:
        problems.append("Wi-Fi password given without --wifi-ssid")
    return problems


def check_board(board: str, root: Path = ROOT) -> list[str]:
    boards = known_boards(root)
    if board in boards:
        return []
    return [f"board {board!r} does not exist: boards/ has {', '.join(boards) or 'none'}"]


def device_config(inputs: Inputs) -> dict:
    """The config.json the device loads (key names: lib/jobs/config.py SCHEMA)."""
    config = {
        "thing_name": inputs.thing,
        "endpoint": inputs.endpoint,
        "port": inputs.port,
        "ca": CA_FILE,
        "cert": CERT_FILE,
        "key": KEY_FILE,
        "board": inputs.board,
        "wifi_ssid": inputs.wifi_ssid,
        "wifi_password": inputs.wifi_password,
    }
    if inputs.codesign_cert is not None:
        config["codesign_key"] = CODESIGN_FILE
    return config


@dataclass
class Output:
    """One file provision writes; `path` is relative to the output folder, which is the device root."""

    path: str
    data: bytes
    secret: bool = False


def outputs(inputs: Inputs, material: Material) -> list[Output]:
    der = serialization.Encoding.DER
    config = (json.dumps(device_config(inputs), indent=2) + "\n").encode()
    return [
        Output(CA_FILE, material.ca.public_bytes(der)),
        Output(CERT_FILE, material.cert.public_bytes(der)),
        Output(KEY_FILE, certs.device_key_der(material.key), secret=True),
        Output("config.json", config, secret=True),  # the Wi-Fi password
    ]


def private_folder(folder: Path) -> None:
    """Make `folder` (and its parents); only its owner may enter it."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)


def write_file(path: Path, data: bytes, secret: bool = False) -> None:
    """Write `data` to `path`; a secret is mode 0600 from its first byte, also over an older file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as file:
        if secret:
            os.fchmod(file.fileno(), 0o600)
        file.write(data)


def write_outputs(inputs: Inputs, material: Material, out: Path) -> list[Path]:
    written = []
    try:
        private_folder(out)
        for output in outputs(inputs, material):
            write_file(out / output.path, output.data, output.secret)
            written.append(out / output.path)
    except OSError as error:
        where = error.filename or out
        raise ProvisionError([f"cannot write {where}: {error.strerror or error}"]) from None
    return written


def codesign_point(path: Path) -> tuple[bytes | None, str | None]:
    """(64-byte X||Y, None) of the P-256 public key in a code-signing certificate (PEM or DER;
    a PEM public key is taken too), or (None, the problem in one sentence)."""
    what = "code-signing certificate"
    try:
        data = path.read_bytes()
    except OSError as error:
        return None, f"{what}: cannot read {path}: {error.strerror or error}"
    if b"PRIVATE KEY-----" in data:
        return None, f"{what}: {path} is a private key: give the certificate; the key stays with the signer"
    try:
        if b"-----BEGIN PUBLIC KEY-----" in data:
            public_key = serialization.load_pem_public_key(data)
        elif b"-----BEGIN" in data:
            public_key = x509.load_pem_x509_certificate(data).public_key()
        else:
            public_key = x509.load_der_x509_certificate(data).public_key()
    except ValueError:
        return None, f"{what}: {path} is not an X.509 certificate (PEM or DER) or a PEM public key"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        kind = "an EC " + public_key.curve.name
    elif isinstance(public_key, rsa.RSAPublicKey):
        kind = "an RSA"
    else:
        kind = "a " + type(public_key).__name__.strip("_").removesuffix("PublicKey")
    if kind != "an EC secp256r1":
        return None, f"{what}: {path} holds {kind} key; sig-sha256-ecdsa needs EC P-256 (prime256v1)"
    point = public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return point[1:], None


def provision(inputs: Inputs, out: Path, root: Path = ROOT) -> list[Path]:
    """Validate everything, then write config.json and DER files; ProvisionError lists the problems."""
    problems = inputs.problems
    name_problem = check_thing_name(inputs.thing)
    if name_problem:
        problems.append(name_problem)
    problems += check_endpoint(inputs.endpoint, inputs.port, inputs.standin)
    problems += check_board(inputs.board, root)
    problems += check_wifi(inputs.wifi_ssid, inputs.wifi_password)
    material = check_material(inputs)
    codesign = None
    if inputs.codesign_cert is not None:
        codesign, problem = codesign_point(inputs.codesign_cert)
        if problem:
            problems.append(problem)
    if problems or material is None:
        raise ProvisionError(list(problems))
    written = write_outputs(inputs, material, out)
    if codesign is not None:
        (out / CODESIGN_FILE).write_bytes(codesign)
        written.append(out / CODESIGN_FILE)
    return written


# ---- AWS: the thing, its certificate and a least-privilege policy (optional) ----


# Topic filters the firmware subscribes to: jobs.topics.Topics.subscriptions() ('+/+/+' takes
# every <job>/get/... and <job>/update/... answer). A policy's topicfilter resource matches the
# filter string itself, so these are listed literally.
SUBSCRIPTIONS = ("notify-next", "start-next/+", "get/+", "+/+/+")
# What may arrive through them (iot:Receive, '*' is the policy wildcard) and what the device sends.
RECEIVES = ("notify-next", "start-next/*", "get/*", "*/get/*", "*/update/*")
PUBLISHES = ("get", "start-next", "*/get", "*/update")


def policy_document(region: str, account: str, thing: str) -> dict:
    """An IoT policy allowing exactly the MQTT the firmware uses (docs/tooling.md, step 2)."""
    arn = f"arn:aws:iot:{region}:{account}"
    jobs = f"$aws/things/{thing}/jobs"
    publish = [f"{arn}:topic/{jobs}/{t}" for t in PUBLISHES] + [f"{arn}:topic/logi2/device/{thing}"]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": [f"{arn}:client/{thing}"]},
            {"Effect": "Allow", "Action": "iot:Publish", "Resource": publish},
            {
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": [f"{arn}:topicfilter/{jobs}/{t}" for t in SUBSCRIPTIONS],
            },
            {
                "Effect": "Allow",
                "Action": "iot:Receive",
                "Resource": [f"{arn}:topic/{jobs}/{t}" for t in RECEIVES],
            },
        ],
    }


def create_in_aws(iot, thing: str, out: Path) -> tuple[Path, Path, str]:
    """Create thing, certificate (keys written to `out`) and policy with the boto3 IoT client `iot`.

    Returns (certificate PEM path, key PEM path, ATS endpoint).
    """
    iot.create_thing(thingName=thing)
    created = iot.create_keys_and_certificate(setAsActive=True)
    private_folder(out)
    cert_pem, key_pem = out / "aws-cert.pem", out / "aws-key.pem"
    write_file(cert_pem, created["certificatePem"].encode())
    write_file(key_pem, created["keyPair"]["PrivateKey"].encode(), secret=True)
    # arn:aws:iot:<region>:<account>:cert/<id>
    _, _, _, region, account, _ = created["certificateArn"].split(":", 5)
    policy = f"{thing}-jobs"
    iot.create_policy(policyName=policy, policyDocument=json.dumps(policy_document(region, account, thing)))
    iot.attach_policy(policyName=policy, target=created["certificateArn"])
    iot.attach_thing_principal(thingName=thing, principal=created["certificateArn"])
    endpoint = iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
    return cert_pem, key_pem, endpoint


def _located(text: str, folder: Path, written_as: Path | None) -> Path:
    """A path from standin.json. A relative one is relative to where the stand-in ran; it is
    under the state folder the stand-in was given (`written_as`), which is `folder` here."""
    path = Path(text)
    if path.is_absolute() or written_as is None or not path.is_relative_to(written_as):
        return path
    return folder / path.relative_to(written_as)


def from_standin(folder: Path, thing: str) -> dict:
    """What a running stand-in tells a device (its DIR/standin.json): endpoint, port, ca; and
    cert, key when the stand-in issued them for `thing` (`python -m tools.standin create-thing`)."""
    path = folder / "standin.json"
    try:
        facts = json.loads(path.read_text())
        written_as = Path(facts["state"]).parent if facts.get("state") else None  # <folder>/state.sqlite
        found = {
            "endpoint": facts["endpoint"],
            "port": int(facts["mqtt_port"]),
            "ca": _located(facts["ca"], folder, written_as),
        }
    except FileNotFoundError:
        raise ProvisionError(
            [f"{path} not found: start the stand-in first (`make standin` keeps it in build/standin)"]
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        reason = f"no {error}" if isinstance(error, KeyError) else str(error)
        raise ProvisionError([f"{path} is not a stand-in's standin.json ({reason})"]) from None
    pki = (
        _located(facts["certificates"], folder, written_as)
        if facts.get("certificates")
        else found["ca"].parent
    )
    cert, key = pki / f"{thing}.cert.pem", pki / f"{thing}.key.pem"
    if cert.is_file() and key.is_file():
        found.update(cert=cert, key=key)
    return found


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.provision",
        description="Make a device's config.json and DER certificate files from what AWS IoT issued.",
    )
    parser.add_argument("--thing", required=True, help="the thing name (also the MQTT client id)")
    parser.add_argument("--endpoint", help="<prefix>-ats.iot.<region>.amazonaws.com, or localhost")
    parser.add_argument("--port", type=int, help=f"MQTT port (default {DEFAULT_PORT}, or the stand-in's)")
    parser.add_argument("--cert", type=Path, help="the thing's certificate (PEM, as AWS issues it)")
    parser.add_argument("--key", type=Path, help="the thing's private key (PEM)")
    parser.add_argument("--ca", type=Path, help="Amazon Root CA 1 (PEM), or the stand-in's CA")
    parser.add_argument(
        "--standin",
        type=Path,
        metavar="DIR",
        help="a local stand-in's state folder: endpoint, port, CA (and the thing's certificate and key, "
        "if it issued them) from DIR/standin.json; the options above override them",
    )
    parser.add_argument("--board", default="esp32", help="folder under boards/ (default esp32)")
    parser.add_argument("--wifi-ssid", default="")
    parser.add_argument(
        "--wifi-password", help=f"default: the {PASSWORD_ENV} environment variable (on no command line)"
    )
    parser.add_argument("--out", type=Path, help="output folder (default state/provision/<thing>)")
    parser.add_argument(
        "--codesign-cert",
        type=Path,
        help="the code-signing certificate (PEM; EC P-256): OTA files must carry its signature",
    )
    parser.add_argument(
        "--create-in-aws",
        action="store_true",
        help="create thing, certificate and policy with boto3 (AWS credentials needed)",
    )
    return parser


def inputs_from(args: argparse.Namespace) -> Inputs:
    """The command line, with what --standin supplies where an option was not given."""
    given = {"endpoint": args.endpoint, "port": args.port, "cert": args.cert, "key": args.key, "ca": args.ca}
    found = from_standin(args.standin, args.thing) if args.standin else {}
    values = {name: value if value is not None else found.get(name) for name, value in given.items()}
    inputs = Inputs(
        thing=args.thing,
        endpoint=values["endpoint"] or "",
        port=values["port"] if values["port"] is not None else DEFAULT_PORT,
        cert=values["cert"],
        key=values["key"],
        ca=values["ca"],
        board=args.board,
        wifi_ssid=args.wifi_ssid,
        wifi_password=args.wifi_password
        if args.wifi_password is not None
        else os.environ.get(PASSWORD_ENV, ""),
        standin=args.endpoint is None and "endpoint" in found,
        codesign_cert=args.codesign_cert,
    )
    if args.standin and (inputs.cert is None or inputs.key is None) and not args.create_in_aws:
        raise ProvisionError(
            [
                f"the stand-in in {args.standin} has issued no certificate for {args.thing}: `"
                f"{as_typed(sys.executable)} -m tools.standin create-thing {args.thing} "
                f"--state {args.standin}`, or give --cert and --key"
            ]
        )
    return inputs


def summary(inputs: Inputs) -> str:
    wifi = f"Wi-Fi {inputs.wifi_ssid!r} (password not shown)" if inputs.wifi_ssid else "no Wi-Fi"
    return f"{inputs.thing} on {inputs.endpoint}:{inputs.port}, board {inputs.board}, {wifi}"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = args.out or ROOT / "state" / "provision" / args.thing
    try:
        inputs = inputs_from(args)
        if args.create_in_aws:
            name_problem = check_thing_name(args.thing)
            if name_problem:
                raise ProvisionError([name_problem])
            inputs.cert, inputs.key, inputs.endpoint = aws_identity(args.thing, out)
        elif not inputs.endpoint:
            raise ProvisionError(
                ["--endpoint is needed (or --standin DIR, or --create-in-aws to ask AWS for it)"]
            )
        written = provision(inputs, out)
    except ProvisionError as error:
        problems = error.args[0]
        for problem in problems:
            print(f"provision: {problem}", file=sys.stderr)
        if len(problems) > 1:
            print(f"provision: {len(problems)} problem(s); nothing written", file=sys.stderr)
        return 2
    for path in written:
        print(f"provision: wrote {path}")
    print(f"provision: {summary(inputs)}")
    print(f"provision: next, `make deploy PORT=<serial port> CONFIG={out}`")
    return 0


def aws_identity(thing: str, out: Path) -> tuple[Path, Path, str]:
    """create_in_aws with the default boto3 client; ProvisionError with what AWS said."""
    import boto3
    import botocore.exceptions

    try:
        return create_in_aws(boto3.client("iot"), thing, out)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        raise ProvisionError([f"AWS said: {error}"]) from None
    except OSError as error:
        raise ProvisionError([f"cannot write {error.filename or out}: {error.strerror or error}"]) from None


if __name__ == "__main__":
    sys.exit(main())
