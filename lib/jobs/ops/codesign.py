# jobs.ops.codesign: a file's code signature checked before it may boot. MIT licence.
"""The `sig-sha256-ecdsa` check of AWS IoT code signing, for operations that install files:

    key = codesign.key(job)                            # the provisioned public key
    codesign.check(key, hasher.digest(), signature)    # signature: base64 DER, as in the document
    codesign.check_file(key, path, signature, buf)     # the same, hashing a stored file in buf-sized reads

Each raises ops.Failed with the reason (FAILED, nothing installed). The key is the file named by
config `codesign_key` (absolute, or relative to the device root): the 64-byte X||Y of the P-256
public key of the code-signing certificate, written by `make provision CODESIGN_CERT=...`.
"""

from jobs import ecdsa, ops, store
from jobs.ops import staging


def key(job):
    """(x, y) of the device's code-signing key; ops.Failed when none is provisioned or it is bad."""
    path = job.config.get("codesign_key")
    if not path:
        raise ops.Failed("no code-signing key: set codesign_key in config (make provision CODESIGN_CERT=...)")
    path = store.join(job.board.root, path)
    try:
        with open(path, "rb") as f:
            raw = f.read(66)
    except OSError:
        raise ops.Failed("codesign_key " + path + " cannot be read")
    try:
        return ecdsa.public_key(raw)
    except ValueError as error:
        raise ops.Failed("codesign_key " + path + ": " + error.args[0])


def check(key, digest, signature):
    """ops.Failed unless `signature` (base64 of a DER ECDSA signature) signs the SHA-256 `digest`."""
    try:
        der = ecdsa.from_base64(signature)
        ecdsa.signature(der)
    except ValueError as error:
        raise ops.Failed("sig-sha256-ecdsa: " + error.args[0])
    if not ecdsa.verify(digest, der, key):
        raise ops.Failed("sig-sha256-ecdsa: signature does not match the file and the code-signing key")


def check_file(key, path, signature, buf):
    """check() over the SHA-256 of the file at `path`, read into `buf` one block at a time."""
    hashed = staging.hash_file(path, buf)
    if hashed is None:
        raise ops.Failed(path + " cannot be read")
    check(key, hashed[0].digest(), signature)
