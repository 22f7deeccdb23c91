# otaimage: test images served by the local HTTPS file server (tests/host/fileserver.py).
import binascii
import hashlib
import struct

from mptest import env


def files_dir():
    return env("MPTEST_FILES_DIR")


def url(name, query=""):
    return "https://localhost:" + env("MPTEST_FILES_PORT") + "/" + name + query


def config(**extra):
    cfg = {"https_ca": env("MPTEST_FILES_CA"), "https_timeout_ms": 5000}
    cfg.update(extra)
    return cfg


def make(name, size, seed=1, magic=0xE9):
    """Write an image of `size` bytes into the served folder; its sha256 hex."""
    block = bytearray(4096)
    for i in range(4096):
        block[i] = (i * 31 + seed * 7) & 0xFF
    hasher = hashlib.sha256()
    pos = 0
    with open(files_dir() + "/" + name, "wb") as f:
        while pos < size:
            struct.pack_into("<II", block, 0, pos // 4096, seed)
            if pos == 0:
                block[0] = magic
            n = min(4096, size - pos)
            mv = memoryview(block)[:n]
            f.write(mv)
            hasher.update(mv)
            pos += n
    return binascii.hexlify(hasher.digest()).decode()


def requests():
    """The server's request log: [{"target", "start", "sent", "status"}, ...]."""
    import json

    try:
        with open(files_dir() + "/_requests.log") as f:
            return [json.loads(line) for line in f]
    except OSError:
        return []


def requests_for(name):
    return [r for r in requests() if r["target"].split("?")[0] == "/" + name]


def closed_port():
    """A loopback port nothing listens on (tcpmux, port 1: never served on a test machine)."""
    return 1
