# micropython: needs=fileserver,filesproxy,broker
# micropython: timeout=120
# jobs.ops.transfer and jobs.ops.https against the local HTTPS file server: handshake retries
# with backoff, a certificate failure never retried, one SSLContext per job, the MQTT link
# released for a download, free space checked on a real LittleFS before staging.
import binascii
import hashlib
import json
import os
import random
import time

import otaimage
import vfs
from jobdouble import Job
from jobs import ops
from jobs.ops import appstore, https
from jobsctl import proxy
from mptest import env, raises
from opstate import fresh_board

_CONTROL = "MPTEST_FILES_PROXY_CONTROL"


def _serve(name, data):
    with open(otaimage.files_dir() + "/" + name, "wb") as f:
        f.write(data)
    return binascii.hexlify(hashlib.sha256(data).digest()).decode()


def _front_url(name):
    """The file server's URL through the link proxy in front of it (tests/linkproxy.py)."""
    return "https://localhost:" + env("MPTEST_FILES_PROXY_PORT") + "/" + name


def _front_drop(n):
    proxy("cut " + str(n), _CONTROL)


def _front_count():
    return int(proxy("count", _CONTROL))


def _download(b, url, path, sha, cfg=None, **fields):
    doc = {"operation": "file.download", "url": url, "path": path, "sha256": sha}
    doc.update(fields)
    op, doc, reason = ops.prepare(doc, b)
    assert reason is None, reason
    job = Job(b, doc, config=otaimage.config() if cfg is None else cfg)
    return op, job


def test_a_handshake_that_fails_with_oserror_is_retried_with_backoff():
    sha = _serve("retry.bin", b"r" * 5000)
    b = fresh_board()
    op, job = _download(b, _front_url("retry.bin"), "retry.bin", sha, size=5000)
    before = _front_count()
    _front_drop(2)  # the first two connections are reset during the TLS handshake
    t0 = time.ticks_ms()
    assert op.run(job) == {"path": "retry.bin", "size": "5000"}
    took = time.ticks_diff(time.ticks_ms(), t0)
    assert _front_count() - before == 3
    retries = [u[1]["retry"] for u in job.updates if "retry" in u[1]]
    assert retries == ["1", "2"], job.updates
    assert took >= 125 + 250, took  # backoff: at least half of 250 ms, then half of 500 ms
    with open(b.root + "/retry.bin", "rb") as f:
        assert f.read() == b"r" * 5000
    _front_drop(1)  # without a size, the request for it is retried the same way
    op, job = _download(b, _front_url("retry.bin"), "again.bin", sha)
    assert op.run(job) == {"path": "again.bin", "size": "5000"}
    assert [u[1] for u in job.updates if "retry" in u[1]] == [{"step": "connecting", "retry": "1"}]


def test_a_handshake_that_keeps_failing_ends_failed_with_the_reason():
    b = fresh_board()
    op, job = _download(b, _front_url("never.bin"), "never.bin", "0" * 64, size=10)
    before = _front_count()
    _front_drop(9)
    try:
        with raises(ops.Failed) as caught:
            op.run(job)
    finally:
        _front_drop(0)
    port = env("MPTEST_FILES_PROXY_PORT")
    assert caught.value.args[0] == "download: TLS handshake with localhost:" + port + " failed (errno 104)"
    assert _front_count() - before == 5  # the first try and 4 retries
    assert os.listdir(b.root) == ["simboard"]  # no .part left


def test_a_certificate_that_does_not_verify_is_not_retried():
    sha = _serve("other-ca.bin", b"c" * 100)
    b = fresh_board()
    cfg = otaimage.config(https_ca=env("MPTEST_PKI") + "/ca.cert.der")  # the broker's CA, not the server's
    op, job = _download(b, _front_url("other-ca.bin"), "other-ca.bin", sha, cfg)
    before = _front_count()
    with raises(ops.Failed) as caught:
        op.run(job)
    assert caught.value.args[0].startswith("download: TLS: localhost not verified ("), caught.value.args
    assert _front_count() - before == 1
    assert [u for u in job.updates if "retry" in u[1]] == []


def _count_contexts():
    made = []
    real = https.context

    def counted(ca):
        made.append(ca)
        return real(ca)

    https.context = counted
    return made, real


def test_one_ssl_context_serves_every_connection_of_a_job():
    data = bytes(range(256)) * 600  # 153,600 bytes
    sha = _serve("ctx.bin", data)
    b = fresh_board()
    op, job = _download(b, otaimage.url("ctx.bin", "?drop=70000"), "ctx.bin", sha)
    made, real = _count_contexts()
    try:
        op.run(job)
        assert len(otaimage.requests_for("ctx.bin")) == 2  # dropped once, resumed with Range
        assert len(made) == 1
        files = []
        for name in ("ctx-1.txt", "ctx-2.txt"):
            text = name.encode() * 10
            files.append(
                {"path": name, "url": otaimage.url(name), "sha256": _serve(name, text), "size": len(text)}
            )
        doc = {"operation": "ota.files", "files": files, "version": "ctx"}
        files_op, doc, reason = ops.prepare(doc, b)
        assert reason is None, reason
        with raises(SystemExit):  # staged, switched, rebooting
            files_op.run(Job(b, doc, config=otaimage.config()))
        assert len(made) == 2  # one more job, one more context, for both its files
    finally:
        https.context = real


def test_the_mqtt_link_is_released_for_a_download_unless_the_board_has_psram_or_config_says_no():
    sha = _serve("link.bin", b"l" * 300)

    def released(board, **cfg):
        op, job = _download(board, otaimage.url("link.bin"), "link.bin", sha, otaimage.config(**cfg))
        op.run(job)
        return job.released

    plain = fresh_board()
    assert released(plain) >= 1  # the simulated DevKitC has no PSRAM
    assert released(plain, https_close_mqtt=False) == 0
    rich = fresh_board()
    rich.psram = True
    assert released(rich) == 0
    assert released(rich, https_close_mqtt=True) >= 1


class _RAMBlocks:
    """A block device in RAM: a real LittleFS goes on it (the flash is what this machine lacks)."""

    def __init__(self, block_size, count):
        self.block_size = block_size
        self.data = bytearray(block_size * count)

    def readblocks(self, block, buf, offset=0):
        at = block * self.block_size + offset
        buf[:] = self.data[at : at + len(buf)]

    def writeblocks(self, block, buf, offset=None):
        at = block * self.block_size + (offset or 0)
        self.data[at : at + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == 4:
            return len(self.data) // self.block_size
        if op == 5:
            return self.block_size
        return 0


def _small_board(kib):
    """A unix board whose root is a fresh LittleFS of `kib` KiB."""
    import board

    dev = _RAMBlocks(512, kib * 2)
    vfs.VfsLfs2.mkfs(dev)
    mount = "/mptest-lfs-" + str(random.getrandbits(24))
    vfs.mount(vfs.VfsLfs2(dev), mount)
    return board.Board({"board_state_dir": mount}), mount


def test_a_download_that_does_not_fit_fails_with_the_numbers_before_any_request():
    b, mount = _small_board(64)
    try:
        big = b"B" * (80 * 1024)
        sha = _serve("big.bin", big)
        op, job = _download(b, otaimage.url("big.bin"), "data/big.bin", sha, size=len(big))
        before = len(otaimage.requests_for("big.bin"))
        with raises(ops.Failed) as caught:
            op.run(job)
        reason = caught.value.args[0]
        free = os.statvfs(mount)[4] * 512
        assert (
            reason
            == "not enough space for the download: "
            + str(81920 + 1024)
            + " bytes needed, "
            + str(free)
            + " free"
        ), reason
        assert len(otaimage.requests_for("big.bin")) == before
        assert os.listdir(mount + "/data") == []  # no .part
        small = b"s" * 8000  # one that fits is written on the same filesystem
        op, job = _download(b, otaimage.url("fits.bin"), "data/fits.bin", _serve("fits.bin", small))
        assert op.run(job)["size"] == "8000"
        with open(mount + "/data/fits.bin", "rb") as f:
            assert f.read() == small
    finally:
        vfs.umount(mount)


def test_application_files_that_do_not_fit_fail_before_staging_and_the_app_is_untouched():
    b, mount = _small_board(96)
    try:
        os.mkdir(mount + "/app")
        os.mkdir(mount + "/app/a")
        with open(mount + "/app/a/table.bin", "wb") as f:
            f.write(b"t" * (30 * 1024))  # kept: staging copies it
        with open(mount + "/app/app.json", "w") as f:
            json.dump({"dir": "a", "version": "1", "state": "VALID"}, f)
        files = []
        for name in ("one.py", "two.py"):
            text = b"x" * (20 * 1024)
            files.append(
                {
                    "path": name,
                    "url": otaimage.url("fit-" + name),
                    "sha256": _serve("fit-" + name, text),
                    "size": len(text),
                }
            )
        doc = {"operation": "ota.files", "files": files, "version": "2"}
        op, doc, reason = ops.prepare(doc, b)
        assert reason is None, reason
        free = os.statvfs(mount)[4] * 512
        with raises(ops.Failed) as caught:
            op.run(Job(b, doc, config=otaimage.config()))
        need = (20 + 20 + 30) * 1024 + 1024
        assert caught.value.args[0] == (
            "not enough space for the application files: "
            + str(need)
            + " bytes needed, "
            + str(free)
            + " free"
        ), (caught.value.args, free)
        assert appstore.state(b.root) == {"dir": "a", "version": "1", "state": "VALID"}
        assert sorted(os.listdir(mount + "/app")) == ["a", "app.json"]
        assert len(otaimage.requests_for("fit-one.py")) == 0
    finally:
        vfs.umount(mount)
