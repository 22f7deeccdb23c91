# micropython: needs=fileserver,broker
# micropython: timeout=120
# ota.firmware against a local HTTPS server, on the simulated board (resets caught in-process;
# tests/host/test_ota_resets.py runs the real process exits).
import binascii
import hashlib

import otaimage
from jobdouble import Job
from jobs import ops
from mptest import env, raises
from opstate import boot_again, fresh_board

SIZE = 300 * 1024 + 123  # not a whole number of blocks


def _doc(name, sha, size=SIZE, version="2.0.0", query=""):
    return {
        "operation": "ota.firmware",
        "url": otaimage.url(name, query),
        "sha256": sha,
        "size": size,
        "version": version,
    }


def _slot_sha(b, label, size):
    import board

    slot = board.SimPartition(b, label)
    buf = bytearray(4096)
    h = hashlib.sha256()
    pos = 0
    while pos < size:
        slot.readblocks(pos // 4096, buf)
        h.update(memoryview(buf)[: min(4096, size - pos)])
        pos += 4096
    return binascii.hexlify(h.digest()).decode()


def _until_reset(op, job, resume=False):
    with raises(SystemExit) as caught:
        op.resume(job) if resume else op.run(job)
    assert caught.value.args[0] == 75


def _failed(b, doc, cfg=None):
    op, doc, reason = ops.prepare(doc, b)
    assert reason is None, reason
    with raises(ops.Failed) as caught:
        op.run(Job(b, doc, config=otaimage.config() if cfg is None else cfg))
    b2 = boot_again(b)
    assert (b2.running_slot(), b2.firmware_version(), b2.boot_state()) == ("ota_0", "1.0.0", "VALID")
    return caught.value.args[0]


def test_update_with_a_presigned_url_boots_self_tests_and_succeeds():
    sha = otaimage.make("fw-ok.bin", SIZE)
    b = fresh_board()
    journal = b.root + "/journal.json"
    query = "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F2026&X-Amz-Signature=ab12"
    doc = _doc("fw-ok.bin", sha, query=query)
    op, doc, reason = ops.prepare(doc, b)
    assert reason is None
    job = Job(b, doc, config=otaimage.config(), journal=journal)
    _until_reset(op, job)
    assert job.updates[0][1]["step"] == "downloading"
    assert job.updates[-1] == ("IN_PROGRESS", {"step": "rebooting", "version": "2.0.0"})
    assert otaimage.requests_for("fw-ok.bin")[0]["target"].endswith(query)
    b = boot_again(b)
    assert (b.running_slot(), b.boot_state(), b.firmware_version()) == ("ota_1", "PENDING_VERIFY", "2.0.0")
    after = Job(b, None, config=otaimage.config(), journal=journal)
    assert after.phase == "ota.boot"
    assert op.resume(after) == {"version": "2.0.0", "previous": "1.0.0"}
    assert after.updates == [("IN_PROGRESS", {"step": "self-test", "version": "2.0.0"})]
    assert b.boot_state() == "VALID"
    assert _slot_sha(b, "ota_1", SIZE) == sha
    assert boot_again(b).running_slot() == "ota_1"


def test_a_dropped_connection_resumes_with_range():
    sha = otaimage.make("fw-drop.bin", SIZE, seed=2)
    b = fresh_board()
    job = Job(b, _doc("fw-drop.bin", sha, query="?drop=150000"), config=otaimage.config())
    _until_reset(ops.find("ota.firmware"), job)
    seen = otaimage.requests_for("fw-drop.bin")
    assert [r["status"] for r in seen] == [200, 206], seen
    assert seen[0]["sent"] == 150000 and seen[1]["start"] == 147456  # the last whole block
    assert seen[0]["sent"] + seen[1]["sent"] < SIZE + 4096
    retry = [u[1] for u in job.updates if "retry" in u[1]]
    percent = str(147456 * 100 // SIZE)
    assert retry == [
        {"step": "downloading", "received": "147456", "size": str(SIZE), "percent": percent, "retry": "1"}
    ]
    assert boot_again(b).firmware_version() == "2.0.0"


def test_a_reset_mid_download_resumes_from_the_journaled_offset():
    sha = otaimage.make("fw-reset.bin", SIZE, seed=3)
    b = fresh_board()
    journal = b.root + "/journal.json"
    op = ops.find("ota.firmware")
    job = Job(b, _doc("fw-reset.bin", sha), config=otaimage.config(), journal=journal)
    job.reset_at = 3  # offset 0, 64 KiB, 128 KiB: reset after journaling 128 KiB
    _until_reset(op, job)
    b = boot_again(b)
    assert b.running_slot() == "ota_0"
    again = Job(b, None, config=otaimage.config(), journal=journal)
    assert (again.phase, again.data["offset"]) == ("ota.download", 131072)
    _until_reset(op, again, resume=True)
    after_reset = otaimage.requests_for("fw-reset.bin")[-1]
    assert after_reset["start"] == 131072 and after_reset["sent"] == SIZE - 131072
    b = boot_again(b)
    assert op.resume(Job(b, None, config=otaimage.config(), journal=journal))["version"] == "2.0.0"
    assert _slot_sha(b, "ota_1", SIZE) == sha


def test_reset_before_mark_valid_rolls_back_and_reports_failed():
    sha = otaimage.make("fw-rb.bin", SIZE, seed=4)
    b = fresh_board()
    journal = b.root + "/journal.json"
    op = ops.find("ota.firmware")
    _until_reset(op, Job(b, _doc("fw-rb.bin", sha), config=otaimage.config(), journal=journal))
    b = boot_again(b)
    assert b.boot_state() == "PENDING_VERIFY"
    b = boot_again(b)  # the new image reset before its self-test
    assert (b.running_slot(), b.firmware_version()) == ("ota_0", "1.0.0")
    with raises(ops.Failed) as caught:
        op.resume(Job(b, None, config=otaimage.config(), journal=journal))
    assert caught.value.args[0] == "rolled back"


def test_hash_mismatch_fails_and_the_image_never_becomes_bootable():
    otaimage.make("fw-bad.bin", SIZE, seed=5)
    b = fresh_board()
    reason = _failed(b, _doc("fw-bad.bin", "0" * 64))
    assert reason.startswith("sha256 mismatch: image is "), reason
    import board

    with raises(OSError):
        board.SimPartition(b, "ota_1").set_boot()


def test_wrong_size_fails():
    sha = otaimage.make("fw-size.bin", SIZE, seed=6)
    reason = _failed(fresh_board(), _doc("fw-size.bin", sha, size=SIZE + 1))
    assert reason == "download: size mismatch: server has " + str(SIZE) + " bytes, expected " + str(SIZE + 1)


def test_http_errors_fail_with_the_status():
    assert _failed(fresh_board(), _doc("missing.bin", "0" * 64)) == "download: HTTP 404"
    assert _failed(fresh_board(), _doc("x.bin", "0" * 64, query="?status=403")) == "download: HTTP 403"


def test_server_gone_fails():
    doc = _doc("x.bin", "0" * 64)
    doc["url"] = "https://localhost:" + str(otaimage.closed_port()) + "/x.bin"
    reason = _failed(fresh_board(), doc)
    assert reason.startswith("download: server unreachable: localhost:1 ("), reason


def test_a_server_signed_by_another_ca_is_refused():
    sha = otaimage.make("fw-ca.bin", 4096, seed=7)
    cfg = otaimage.config(https_ca=env("MPTEST_PKI") + "/ca.cert.der")
    reason = _failed(fresh_board(), _doc("fw-ca.bin", sha, size=4096), cfg)
    assert reason.startswith("download: TLS: localhost not verified"), reason


def test_no_ota_partition_is_rejected_before_anything_runs():
    b = fresh_board(ota=False)
    reason = ops.prepare(_doc("x.bin", "0" * 64), b)[2]
    assert reason == "no OTA partition on this device (flash an OTA build, e.g. ESP32_GENERIC-OTA)", reason


def test_same_version_fails_before_any_download():
    before = len(otaimage.requests())
    assert _failed(fresh_board(), _doc("x.bin", "0" * 64, version="1.0.0")) == "version 1.0.0 already running"
    assert len(otaimage.requests()) == before


def test_image_larger_than_the_partition_is_rejected():
    b = fresh_board(ota_slot_size=65536)
    assert ops.prepare(_doc("x.bin", "0" * 64, size=65537), b)[2] == (
        "image of 65537 bytes exceeds the OTA partition (65536)"
    )
    assert ops.prepare(_doc("x.bin", "0" * 64, size=65536), b)[2] is None


def test_missing_ca_setting_fails_with_the_key_name():
    reason = _failed(fresh_board(), _doc("x.bin", "0" * 64), cfg={})
    assert reason == "no CA for HTTPS downloads: set https_ca in config"


def test_cancel_stops_before_set_boot():
    sha = otaimage.make("fw-cancel.bin", SIZE, seed=8)
    b = fresh_board()
    job = Job(b, _doc("fw-cancel.bin", sha), config=otaimage.config())
    job.cancel_after = 0
    with raises(ops.Canceled):
        ops.find("ota.firmware").run(job)
    assert boot_again(b).running_slot() == "ota_0"


def test_resume_in_the_engines_running_phase_starts_over():
    sha = otaimage.make("fw-running.bin", 8192, seed=9)
    b = fresh_board()
    job = Job(b, _doc("fw-running.bin", sha, size=8192), config=otaimage.config())
    job.phase = "running"  # the engine's phase: reset before the handler's first checkpoint
    _until_reset(ops.find("ota.firmware"), job, resume=True)
    assert boot_again(b).firmware_version() == "2.0.0"


def test_without_https_ca_the_brokers_ca_setting_is_used():
    sha = otaimage.make("fw-ca-fallback.bin", 4096, seed=10)
    b = fresh_board()
    job = Job(b, _doc("fw-ca-fallback.bin", sha, size=4096), config={"ca": env("MPTEST_FILES_CA")})
    _until_reset(ops.find("ota.firmware"), job)
    assert boot_again(b).firmware_version() == "2.0.0"


def test_a_server_that_ignores_range_is_read_past_the_bytes_already_written():
    sha = otaimage.make("fw-norange.bin", SIZE, seed=11)
    b = fresh_board()
    job = Job(b, _doc("fw-norange.bin", sha, query="?drop=100000&norange=1"), config=otaimage.config())
    _until_reset(ops.find("ota.firmware"), job)
    seen = otaimage.requests_for("fw-norange.bin")
    assert [(r["status"], r["start"]) for r in seen] == [(200, 0), (200, 0)], seen
    assert _slot_sha(boot_again(b), "ota_1", SIZE) == sha
