"""The local code-signing profile: sign files for an OTA rehearsal without AWS Signer.

`CreateOTAUpdate` with `codeSigning.startSigningJobParameter.signingProfileName` = `PROFILE`
signs each file here as AWS Signer's ECDSA P-256 profile for FreeRTOS-style devices does: ECDSA
over the SHA-256 of the whole file, the DER signature base64-encoded into the job document's
`sig-sha256-ecdsa`. The key and its certificate (CN "Local code signing", issued by the
stand-in's CA, extended key usage codeSigning) are generated on first use into
`<state>/signing/` and never leave it; provision devices with `code-signing.cert.pem`.
"""

import base64
import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tools.standin.files import file_digest

PROFILE = "standin-local"
_KEY, _CERT = "code-signing.key.pem", "code-signing.cert.pem"


class LocalSigner:
    """The local profile's key in `<state>/signing/` (made on first use, CA-issued certificate)."""

    def __init__(self, folder: Path, ca_cert: Path, ca_key: Path):
        self.folder = Path(folder)
        self.ca_cert, self.ca_key = Path(ca_cert), Path(ca_key)

    @property
    def cert_pem(self) -> Path:
        """The profile's certificate (PEM); the key and it are made on first use."""
        if not (self.folder / _KEY).exists():
            self._make()
        return self.folder / _CERT

    def _key(self):
        path = self.folder / _KEY
        if not path.exists():
            self._make()
        return serialization.load_pem_private_key(path.read_bytes(), None)

    def _make(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        ca = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), None)
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Local code signing")]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        path = self.folder / _KEY
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        path.chmod(0o600)
        self.cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def sign(self, path: Path) -> str:
        """base64 of the DER ECDSA P-256 signature over SHA-256 of the file at `path`."""
        digest = file_digest(path, "sha256")
        der = self._key().sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        return base64.b64encode(der).decode()


def verify(cert_pem: Path, path: Path, signature_b64: str) -> bool:
    """True if `signature_b64` is a valid signature of the file by the certificate's key."""
    public = x509.load_pem_x509_certificate(Path(cert_pem).read_bytes()).public_key()
    try:
        public.verify(
            base64.b64decode(signature_b64), file_digest(path, "sha256"), ec.ECDSA(Prehashed(hashes.SHA256()))
        )
    except (InvalidSignature, ValueError):
        return False
    return True
