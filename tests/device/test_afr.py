# micropython: timeout=120
# micropython: heapsize=16M
# (the 32-bit runtime collects only between scripts: the heap holds every test's garbage)
# AWS IoT OTA on the device: the afr_ota document (jobs.afrdoc, what afr_ota REJECTS), and the
# MQTT stream download (jobs.ops.stream) against an in-process stream service (streamrig).
import binascii
import gc
import hashlib
import json
import sys

import streamrig
from enginerig import Rig
from jobs import afrdoc, config, ops
from jobs.ops import afr, stream
from mptest import raises, skip
from opstate import fresh_board, fresh_dir

SIG = "MEUCIQDv2V0jX2kB0uIb8xW2ZlY9C5x6f6S0I5x3S0o5w5J0ZwIgU1m1Xw6n8c0lK1yq9y1s0b3Zl6b3o2k8J9Wc0t3m1qA="


def _doc(files=None, protocols=("MQTT",), stream_name="AFR_OTA-s1", **extra):
    """The document CreateOTAUpdate makes (as the stand-in writes it, compact)."""
    ota = {"protocols": list(protocols)}
    if stream_name:
        ota["streamname"] = stream_name
    ota["files"] = files if files is not None else [_file()]
    ota.update(extra)
    return json.dumps({"afr_ota": ota}, separators=(",", ":")).encode()


def _file(**fields):
    entry = {"filepath": "/firmware.bin", "filesize": 70000, "fileid": 0, "certfile": "signer.crt",
             "fileType": 0, "sig-sha256-ecdsa": SIG}  # fmt: skip
    entry.update(fields)
    return {k: v for k, v in entry.items() if v is not None}


# -- the document ---------------------------------------------------------------------------------


def test_the_document_create_ota_update_makes_is_read_into_its_known_fields():
    doc = afrdoc.parse(_doc())
    assert doc == {
        "operation": "afr_ota",
        "protocols": ["MQTT"],
        "streamname": "AFR_OTA-s1",
        "files": [_file()],
    }


def test_escapes_white_space_and_unknown_keys_are_handled_without_reading_them_in():
    text = (
        b'{ "other": {"deep": [1, {"x": "}"}], "afr_ota": "no"},\n  "afr_ota" : {'
        b'"protocols": ["HTTP","MQTT"], "streamname": "s\\u00e9", "future": [[[]]], "files": [ {'
        b'"filepath": "app\\/main.py", "filesize": 5, "fileid": 3, "fileType": 1, "attr": 7,'
        b' "sig-sha256-ecdsa": "ab\\/cd==", "new": {"a": null},'
        b' "update_data_url": "https://h/k?a=1\\u0026b=2", "auth_scheme": "aws.s3.presigned",'
        b' "certfile": null}]}}'
    )
    doc = afrdoc.parse(text)
    assert doc["protocols"] == ["HTTP", "MQTT"] and doc["streamname"] == "s\u00e9"
    assert doc["files"] == [
        {
            "filepath": "app/main.py",
            "filesize": 5,
            "fileid": 3,
            "fileType": 1,
            "attr": 7,
            "sig-sha256-ecdsa": "ab/cd==",
            "update_data_url": "https://h/k?a=1&b=2",
            "auth_scheme": "aws.s3.presigned",
        }
    ]


def test_a_document_without_afr_ota_at_the_top_is_not_one():
    assert afrdoc.parse(b'{"operation": "diag.echo", "message": "afr_ota"}') is None
    assert afrdoc.parse(b'{"wrapper": {"afr_ota": {"files": []}}}') is None


def test_what_aws_would_never_send_is_invalid_with_the_reason():
    cases = (
        (b'{"afr_ota": null}', "afr_ota: object expected"),
        (b'{"afr_ota": {"files": {"filesize": 1}}}', "afr_ota.files: list expected"),
        (_doc([_file(filesize="70000")]), "afr_ota.files[0].filesize: integer 0..2147483647 expected"),
        (_doc([_file(filesize=-1)]), "afr_ota.files[0].filesize: integer 0..2147483647 expected"),
        (_doc([_file(fileid=256)]), "afr_ota.files[0].fileid: at most 255"),
        (_doc([_file(filepath=7)]), "afr_ota.files[0].filepath: string expected"),
        (_doc([_file()] * 17), "afr_ota.files: at most 16 files"),
        (
            _doc([_file(**{"sig-sha256-ecdsa": "A" * 600})]),
            "afr_ota.files[0].sig-sha256-ecdsa: longer than 512 bytes",
        ),
        (_doc(protocols=["MQTT"] * 5), "afr_ota.protocols: at most 4 items"),
        (_doc([3]), "afr_ota.files[0]: object expected"),
    )
    for text, reason in cases:
        with raises(afrdoc.Invalid) as caught:
            afrdoc.parse(text)
        assert caught.value.args[0] == reason, (text, caught.value.args[0])


def _allocated(fn, *args):
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    result = fn(*args)
    spent = gc.mem_alloc() - before
    gc.enable()
    return spent, result


def test_reading_a_document_allocates_what_it_keeps_not_what_it_skips():
    def padded(n):
        pad = "x" * n
        return _doc(junk={"a": [pad, pad], "b": {"c": pad}})

    small, doc = _allocated(afrdoc.parse, padded(60))
    large, same = _allocated(afrdoc.parse, padded(6000))
    assert same == doc and doc["files"][0]["filesize"] == 70000
    assert large == small, (small, large)  # the same, however long what it skips
    tree = _allocated(json.loads, padded(6000))[0]  # json.loads builds the 18 KB it skips
    assert tree > 18000, tree
    print("afrdoc.parse allocates", small, "B; json.loads of the same document", tree, "B")


def _rejected(doc_bytes, board=None):
    doc = afrdoc.parse(doc_bytes)
    op, _, reason = ops.prepare(doc, board or fresh_board())
    assert op is None, "not rejected: " + str(doc)
    return reason


F0 = "afr_ota.files[0]"
ONE = "afr_ota.files: one update carries one firmware image (fileType 0) or application files (fileType 1)"


def test_documents_this_device_cannot_serve_are_rejected_with_the_reason():
    app = _file(filepath="main_app.py", fileType=1, filesize=100)
    http = ["HTTP"]
    cases = (
        (_doc(protocols=["CBOR"]), "afr_ota.protocols: CBOR is not served here (MQTT, HTTP)"),
        (_doc(stream_name=None), "afr_ota.streamname: required for the MQTT protocol"),
        (
            _doc([_file(fileType=7)]),
            F0 + ".fileType: 7 is not served here (0: firmware image, 1: application file)",
        ),
        (
            _doc([_file(**{"sig-sha256-ecdsa": None})]),
            F0 + ": no sig-sha256-ecdsa code signature (codeSigning in CreateOTAUpdate)",
        ),
        (
            _doc([_file(**{"sig-sha256-rsa": "x", "sig-sha256-ecdsa": None})]),
            F0 + ": sig-sha256-rsa is not checked here (this device verifies sig-sha256-ecdsa)",
        ),
        (
            _doc([_file(filesize=2 * 1024 * 1024)]),
            F0 + ": image of 2097152 bytes exceeds the OTA partition (1572864)",
        ),
        (_doc([_file(filesize=0)]), F0 + ".filesize: at least 1"),
        (_doc([_file(fileid=None)]), F0 + ".fileid: required"),
        (_doc([_file(), _file(fileid=1)]), ONE),
        (_doc([_file(), app]), ONE),
        (
            _doc([_file(filepath="/a.py", fileType=1)]),
            F0 + ".filepath: must be relative, without a leading /",
        ),
        (_doc([_file(filepath="../boot.py", fileType=1)]), F0 + ".filepath: .. not allowed"),
        (_doc([app, dict(app, fileid=1)]), "afr_ota.files[1].filepath: listed twice"),
        (_doc([_file(filepath=None, fileType=1)]), F0 + ".filepath: required for an application file"),
        (_doc(protocols=http), F0 + ".update_data_url: required for the HTTP protocol"),
        (
            _doc([_file(update_data_url="http://x/y")], protocols=http),
            F0 + ".update_data_url: https:// URL expected",
        ),
        (
            _doc([_file(update_data_url="https://h/x", auth_scheme="aws.sigv4")], protocols=http),
            F0 + ".auth_scheme: aws.sigv4 is not served here (aws.s3.presigned)",
        ),
    )
    board = fresh_board()
    for text, reason in cases:
        assert _rejected(text, board) == reason, (text, _rejected(text, board))
    assert _rejected(_doc(), fresh_board(ota=False)) == (
        F0 + ": no OTA partition on this device (flash an OTA build, e.g. ESP32_GENERIC-OTA)"
    )


def test_documents_it_can_serve_pass_the_checks():
    board = fresh_board()
    for text in (
        _doc(),
        _doc(
            [_file(update_data_url="https://h/x", auth_scheme="aws.s3.presigned")], protocols=["HTTP", "MQTT"]
        ),
        _doc([_file(filepath="main_app.py", fileType=1), _file(filepath="lib/x.mpy", fileType=1, fileid=1)]),
    ):
        op, doc, reason = ops.prepare(afrdoc.parse(text), board)
        assert reason is None and op.name == "afr_ota", reason


def test_a_start_next_answer_with_an_afr_ota_document_is_judged_by_the_engine():
    rig = Rig()
    rig.create("AFR_OTA-bad", json.loads(_doc(protocols=["CBOR"])))
    rig.until(lambda: rig.service.status("AFR_OTA-bad") == "REJECTED")
    assert (
        rig.service.find("AFR_OTA-bad")["details"]["reason"]
        == "afr_ota.protocols: CBOR is not served here (MQTT, HTTP)"
    )
    rig.create("AFR_OTA-worse", {"afr_ota": {"protocols": ["MQTT"], "files": [{"filesize": "big"}]}})
    rig.until(lambda: rig.service.status("AFR_OTA-worse") == "REJECTED")
    reason = rig.service.find("AFR_OTA-worse")["details"]["reason"]
    assert reason == "afr_ota.files[0].filesize: integer 0..2147483647 expected", reason


def test_versions_as_the_ota_agent_orders_and_reports_them():
    assert afr.version_key("v1.23.0-preview.5") == (1, 23, 0)
    assert afr.version_key("micropython-1.24.1") == (1, 24, 1)
    assert afr.version_key("2") == (2,) and afr.version_key("none") is None
    assert afr.app_version("1.2.3") == "0x01020003" and afr.app_version("v0.9") == "0x00090000"
    assert afr.app_version("1.2.70000") == "1.2.70000" and afr.app_version("dev") == "dev"


def test_config_block_size_is_a_power_of_two_whose_messages_fit_the_buffer():
    base = {"endpoint": "h", "thing_name": "t"}
    assert config.ota_block_size(config.validate(base)) == 4096
    assert config.ota_block_size(config.validate(dict(base, buffer_size=2048, max_document=2048))) == 1024
    assert config.ota_block_size(config.validate(dict(base, ota_block_size=256))) == 256
    for extra, reason in (
        ({"ota_block_size": 3000}, "'ota_block_size': must be a power of two (256, 512, ... 131072)"),
        (
            {"ota_block_size": 8192},
            "'ota_block_size': its data messages (11116 bytes) must fit buffer_size (8192)",
        ),
        ({"ota_block_size": 128}, "'ota_block_size': must be an integer 256..131072"),
    ):
        with raises(config.ConfigError) as caught:
            config.validate(dict(base, **extra))
        assert reason in caught.value.args[0], caught.value.args[0]
    assert config.validate(dict(base, ota_block_size=32768, buffer_size=65536))["ota_block_size"] == 32768


# -- base64 in place -------------------------------------------------------------------------------


def test_base64_is_decoded_in_place_as_binascii_decodes_it():
    for n in (0, 1, 2, 3, 4, 5, 255, 4096, 4097):
        data = bytes((i * 7 + n) & 255 for i in range(n))
        text = binascii.b2a_base64(data).strip()
        buf = bytearray(b"xx" + text + b"yy")
        assert stream.decode_in_place(buf, 2, 2 + len(text)) == n
        assert bytes(buf[2 : 2 + n]) == data
    for bad in (b"ab!d", b"abcde", b"a==="):
        buf = bytearray(bad)
        assert stream.decode_in_place(buf, 0, len(buf)) == -1, bad


# -- the stream download ---------------------------------------------------------------------------


def _data(size, seed=1):
    return bytes((i * 31 + seed + (i >> 12)) & 255 for i in range(size))


def _download(svc, link=None, job=None, path=None, size=None, phase="p", resume=False):
    link = link or streamrig.Link(svc)
    job = job or streamrig.Job(link)
    path = path or fresh_dir("stream") + "/out.bin"
    sink = stream.FileSink(path, resume)
    dl = stream.Download(job, svc.stream, svc.file_id, len(svc.data) if size is None else size, sink, phase)
    try:
        digest = dl.run()
    finally:
        sink.close()
    with open(path, "rb") as f:
        got = f.read()
    return dl, job, digest, got


def test_a_file_comes_block_by_block_in_windows_and_the_stream_topics_are_dropped_after():
    data = _data(100 * 1024 + 17)
    svc = streamrig.Service(data)
    link = streamrig.Link(svc)
    dl, job, digest, got = _download(svc, link)
    assert got == data and digest == hashlib.sha256(data).digest()
    assert dl.fetched == 26 and sorted(svc.served) == list(range(26))
    first = svc.requests[0]
    assert first == {"c": "ota-abcd1234", "f": 0, "l": 4096, "s": 1, "o": 0, "n": 8, "b": "ff"}, first
    assert [r["o"] for r in svc.requests] == [0, 8, 16, 24]
    assert svc.requests[-1]["n"] == 2 and svc.requests[-1]["b"] == "03"
    topics = [
        streamrig.BASE.encode() + b"fw-stream/" + t
        for t in (b"data/json", b"description/json", b"rejected/json")
    ]
    assert link.subscribed == topics and link.unsubscribed == topics
    assert job.client.on_stream is None
    assert job.last_update == {"receive": "26/26"} and job.progressed > 26
    assert [c[1]["bitmap"] for c in job.checkpoints] == [
        "ffff0000",
        "ffffff03",
    ]  # every 64 KiB, and at the end
    assert job.checkpoints[0] == (
        "p",
        {"stream": "fw-stream", "file": 0, "block": 4096, "version": 1, "bitmap": "ffff0000"},
    )


def test_blocks_out_of_order_are_hashed_in_file_order():
    data = _data(40 * 1024 + 1)
    svc = streamrig.Service(data)
    svc.reverse = True
    dl, job, digest, got = _download(svc)
    assert got == data and digest == hashlib.sha256(data).digest()
    assert svc.served[:8] == [7, 6, 5, 4, 3, 2, 1, 0]


def test_missing_blocks_are_asked_again_by_bitmap_with_backoff():
    data = _data(64 * 1024)
    svc = streamrig.Service(data)
    svc.drop_once = {1, 2, 9, 15}
    dl, job, digest, got = _download(svc)
    assert got == data and digest == hashlib.sha256(data).digest()
    # after the window's time: from the first missing block, only the missing ones
    assert svc.requests[1] == {"c": "ota-abcd1234", "f": 0, "l": 4096, "s": 1, "o": 1, "n": 8, "b": "83"}
    assert sorted(svc.served) == list(range(16))  # each block sent once: none fetched twice


def test_a_download_resumes_from_the_journaled_bitmap_without_fetching_those_blocks():
    data = _data(96 * 1024 + 5)
    svc = streamrig.Service(data)
    path = fresh_dir("stream") + "/out.bin"
    with open(path, "wb") as f:  # what a first run stored before the reset: blocks 0-9 and 12
        f.write(data[: 13 * 4096])
    bitmap = binascii.hexlify(bytes([0xFF, 0x13, 0, 0])).decode()
    journal = {"stream": "fw-stream", "file": 0, "block": 4096, "version": 1, "bitmap": bitmap}
    link = streamrig.Link(svc)
    job = streamrig.Job(link, phase="p", data=journal)
    dl, job, digest, got = _download(svc, link, job, path, resume=True)
    assert got == data and digest == hashlib.sha256(data).digest()
    assert 12 not in svc.served and not set(range(10)) & set(svc.served)
    assert sorted(svc.served) == [10, 11] + list(range(13, 25))
    assert svc.requests[0]["o"] == 10 and svc.requests[0]["b"] == "fb"


def test_the_link_lost_mid_download_is_reconnected_and_the_topics_subscribed_again():
    data = _data(48 * 1024)
    svc = streamrig.Service(data)
    link = streamrig.Link(svc)
    link.cut_after = 5
    dl, job, digest, got = _download(svc, link)
    assert got == data and link.connects == 2
    assert len(link.subscribed) == 6 and len(link.unsubscribed) == 3


def test_what_the_stream_service_refuses_fails_the_download_with_the_reason():
    data = _data(10000)
    cases = (
        (("ResourceNotFound", "no stream"), "stream fw-stream: ResourceNotFound: no stream"),
        (("ETagMismatch", "the file changed"), "stream fw-stream: ETagMismatch: the file changed"),
    )
    for refusal, reason in cases:
        svc = streamrig.Service(data)
        svc.reject = refusal
        with raises(ops.Failed) as caught:
            _download(svc)
        assert caught.value.args[0] == reason, caught.value.args[0]
    svc = streamrig.Service(data)
    svc.size = 9999
    with raises(ops.Failed) as caught:
        _download(svc)
    assert caught.value.args[0] == "stream fw-stream file 0 has 9999 bytes, the job document says 10000"
    svc = streamrig.Service(data)
    svc.reject_once = ("InternalError", "try again")  # transient: asked again
    assert _download(svc)[3] == data


def test_a_stream_changed_since_the_journal_fails_rather_than_mix_two_files():
    data = _data(20000)
    svc = streamrig.Service(data, version=2)
    journal = {"stream": "fw-stream", "file": 0, "block": 4096, "version": 1, "bitmap": "0300"[:2]}
    link = streamrig.Link(svc)
    path = fresh_dir("stream") + "/out.bin"
    with open(path, "wb") as f:
        f.write(data[:8192])
    job = streamrig.Job(link, phase="p", data=journal)
    with raises(ops.Failed) as caught:
        _download(svc, link, job, path, resume=True)
    assert caught.value.args[0] == "stream fw-stream changed since the download began (version 1 -> 2)"


def test_silence_is_asked_again_with_backoff_then_ends_the_download_failed():
    svc = streamrig.Service(_data(5000))
    svc.silent = True
    link = streamrig.Link(svc)
    job = streamrig.Job(link)
    with raises(ops.Failed) as caught:
        _download(svc, link, job)
    assert caught.value.args[0] == "stream fw-stream: no description after 9 requests", caught.value.args[0]
    asked = [line for line in job.logs if "no answer; asking again in" in line]
    assert len(asked) == 8, job.logs


def test_canceled_while_downloading():
    svc = streamrig.Service(_data(64 * 1024))
    link = streamrig.Link(svc)
    job = streamrig.Job(link)
    job.cancel_after = 3
    with raises(ops.Canceled):
        _download(svc, link, job)
    assert job.client.on_stream is None and len(link.unsubscribed) == 3


def test_other_files_wrong_sizes_and_garbage_on_the_data_topic_are_ignored():
    data = _data(8192)
    svc = streamrig.Service(data)
    real = svc.answer

    def answer(topic, payload):
        out = real(topic, payload)
        if topic.endswith("/get/json"):
            base = streamrig.BASE + svc.stream + "/data/json"
            junk = (
                b'{"f":1,"l":4096,"i":0,"p":"' + b"A" * 5464 + b'"}',
                b'{"f":0,"l":10,"i":1,"p":"AAAA"}',
                b"{",
                b"[]",
            )
            out = [(base, j) for j in junk] + out
        return out

    svc.answer = answer
    dl, job, digest, got = _download(svc)
    assert got == data and dl.fetched == 2


def test_a_firmware_slot_gets_each_sector_erased_once_then_its_blocks_written():
    data = _data(5 * 1024 + 3)
    svc = streamrig.Service(data)
    erased = []

    class Slot:
        def __init__(self):
            self.bytes = bytearray(b"\x00" * 16384)

        def ioctl(self, cmd, arg):
            if cmd == 6:
                erased.append(arg)
                self.bytes[arg * 4096 : arg * 4096 + 4096] = b"\xff" * 4096
            return 0

        def writeblocks(self, block, buf, offset=0):
            pos = block * 4096 + offset
            self.bytes[pos : pos + len(buf)] = buf

        def readblocks(self, block, buf, offset=0):
            pos = block * 4096 + offset
            buf[:] = self.bytes[pos : pos + len(buf)]

    slot = Slot()
    link = streamrig.Link(svc)
    job = streamrig.Job(link, ota_block_size=1024)
    dl = stream.Download(job, svc.stream, 0, len(data), stream.SlotSink(slot), "p")
    assert dl.run() == hashlib.sha256(data).digest()
    assert bytes(slot.bytes[: len(data)]) == data and erased == [0, 1]


def test_the_live_heap_of_a_4k_block_download_stays_within_8k():
    if sys.platform == "webassembly":
        skip("no collection inside a test on this runtime: make bench measures the 32-bit heap")
    data = _data(256 * 1024)
    svc = streamrig.Service(data)
    for i in range(64):
        svc.block(i, 4096)  # built before: the service's own memory is not the device's
    link = streamrig.Link(svc)
    job = streamrig.Job(link)
    peak = [0]

    class Sink(stream.FileSink):
        def write(self, index, mv, dl):
            super().write(index, mv, dl)
            gc.collect()
            peak[0] = max(peak[0], gc.mem_alloc())

    path = fresh_dir("stream") + "/out.bin"
    sink = Sink(path)
    dl = stream.Download(job, svc.stream, 0, len(data), sink, "p")
    gc.collect()
    idle = gc.mem_alloc()
    dl.run()
    sink.close()
    assert peak[0] - idle < 8192, peak[0] - idle
    print("live heap above idle during the download:", peak[0] - idle, "B")
