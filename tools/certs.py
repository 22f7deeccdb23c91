"""Certificates for the local AWS IoT stand-in: a CA, a server certificate, device certificates.

Everything is generated at run time into a state folder (never committed): PEM for the broker
and the host tools, DER for MicroPython (whose TLS on the Unix wheel parses only DER). A DER key
is written as `device_key_der` writes it, the form every supported MicroPython reads.
"""

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Identity:
    """One certificate and its key, as files in PEM and DER."""

    name: str
    cert_pem: Path
    key_pem: Path
    cert_der: Path
    key_der: Path


def _new_key(kind: str):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key type {kind!r} (use 'rsa' or 'ec')")


def device_key_der(key) -> bytes:
    """`key` as DER in its traditional form: PKCS#1 `RSAPrivateKey` or SEC1 `ECPrivateKey`.

    Not PKCS#8: MicroPython v1.23.0 hands mbedTLS the key with one byte more than its length (the
    NUL of a PEM string), and mbedTLS 3.x's PKCS#8 parser refuses a buffer with a byte left over
    (`ValueError: invalid key`; fixed in v1.24.0). Its PKCS#1 and SEC1 parsers stop at the key's
    own length, so these forms load on v1.23.0 and on every later version.
    """
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _write(folder: Path, name: str, cert: x509.Certificate, key) -> Identity:
    folder.mkdir(parents=True, exist_ok=True)
    ident = Identity(
        name,
        folder / f"{name}.cert.pem",
        folder / f"{name}.key.pem",
        folder / f"{name}.cert.der",
        folder / f"{name}.key.der",
    )
    ident.cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    ident.cert_der.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for path, data in ((ident.key_pem, pem), (ident.key_der, device_key_der(key))):
        path.write_bytes(data)
        path.chmod(0o600)
    return ident


def load(folder: Path, name: str) -> Identity:
    """The identity `name` written earlier into `folder`."""
    return Identity(
        name,
        folder / f"{name}.cert.pem",
        folder / f"{name}.key.pem",
        folder / f"{name}.cert.der",
        folder / f"{name}.key.der",
    )


def _builder(subject: str, issuer: x509.Name, public_key, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + days * _DAY)
    )


def make_ca(folder: Path, name: str = "ca", days: int = 3650) -> Identity:
    """A self-signed certificate authority (EC P-256)."""
    key = _new_key("ec")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Local AWS IoT stand-in {name}")])
    builder = _builder(f"Local AWS IoT stand-in {name}", subject, key.public_key(), days)
    builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    builder = builder.add_extension(
        x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
    )
    return _write(folder, name, builder.sign(key, hashes.SHA256()), key)


LOCAL_NAMES = ("localhost", "127.0.0.1")


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def server_names(cert_pem: Path) -> set[str]:
    """The host names and addresses a server certificate's subjectAltName covers."""
    cert = x509.load_pem_x509_certificate(Path(cert_pem).read_bytes())
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(n) for n in names.get_values_for_type(x509.IPAddress)} | set(
        names.get_values_for_type(x509.DNSName)
    )


def _issue(ca: Identity, folder: Path, name: str, common_name: str, kind: str, days: int, hosts=()):
    """A leaf certificate; with `hosts` a server certificate whose subjectAltName lists them."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key_pem.read_bytes(), None)
    key = _new_key(kind)
    builder = _builder(common_name, ca_cert.subject, key.public_key(), days)
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
    if hosts:
        names = [_general_name(h) for h in dict.fromkeys(hosts)]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        usage = x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
    else:
        usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return _write(folder, name, builder.sign(ca_key, hashes.SHA256()), key)


def make_server(
    ca: Identity, folder: Path, name: str = "server", days: int = 825, hosts=LOCAL_NAMES
) -> Identity:
    """A server certificate for `hosts` (names or IP addresses), signed by `ca`."""
    return _issue(ca, folder, name, "localhost", "ec", days, hosts=tuple(hosts) or LOCAL_NAMES)


def make_device(ca: Identity, folder: Path, thing: str, kind: str = "rsa", days: int = 365) -> Identity:
    """A device certificate whose CN is the thing name (RSA 2048 as AWS issues, or EC P-256)."""
    return _issue(ca, folder, thing, thing, kind, days)
