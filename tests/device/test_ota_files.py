# micropython: needs=fileserver
# ota.files and file.download on the simulated board, against the local HTTPS server.
import json
import os

import otaimage
from jobdouble import Job
from jobs import ops
from jobs.ops import appstore
from mptest import raises
from opstate import boot_again, fresh_board


def _serve(name, text):
    import binascii
    import hashlib

    data = text.encode()
    with open(otaimage.files_dir() + "/" + name, "wb") as f:
        f.write(data)
    return {
        "path": name,
        "url": otaimage.url(name),
        "sha256": binascii.hexlify(hashlib.sha256(data).digest()).decode(),
        "size": len(data),
    }


def _app_v1():
    """A board whose running application is version 1: main_app.py, lib/helper.py, data.txt."""
    b = fresh_board()
    root = b.root
    os.mkdir(root + "/app")
    os.mkdir(root + "/app/a")
    os.mkdir(root + "/app/a/lib")
    for rel, text in (
        ("main_app.py", "VERSION = '1'\n"),
        ("lib/helper.py", "VERSION = '1'\n"),
        ("data.txt", "kept"),
    ):
        with open(root + "/app/a/" + rel, "w") as f:
            f.write(text)
    with open(root + "/app/app.json", "w") as f:
        json.dump({"dir": "a", "version": "1", "state": "VALID"}, f)
    return b


def _v2_files(tag):
    return [
        _serve(tag + "-main.py", "VERSION = '2'\n"),
        _serve(tag + "-helper.py", "VERSION = '2'\n"),
    ]


def _doc(files):
    items = []
    paths = ("main_app.py", "lib/helper.py")
    for i in range(len(files)):
        item = dict(files[i])
        item["path"] = paths[i]
        items.append(item)
    return {"operation": "ota.files", "files": items, "version": "2"}


def _running(root):
    """The version a fresh boot would run; asserts the application is whole and consistent."""
    folder = appstore.boot(root)
    seen = []
    for rel in ("main_app.py", "lib/helper.py"):
        with open(folder + "/" + rel) as f:
            seen.append(f.read())
    with open(folder + "/data.txt") as f:
        assert f.read() == "kept"
    assert seen[0] == seen[1], seen
    version = seen[0].split("'")[1]
    assert appstore.version(root) == version
    return version


def _step(op, job, resume):
    try:
        return op.resume(job) if resume else op.run(job)
    except SystemExit as reset:
        assert reset.args[0] == 75
        return "reset"


def test_update_stages_swaps_boots_and_commits_keeping_the_previous_files():
    b = _app_v1()
    journal = b.root + "/journal.json"
    doc = _doc(_v2_files("ok"))
    op, doc, reason = ops.prepare(doc, b)
    assert reason is None, reason
    assert _step(op, Job(b, doc, config=otaimage.config(), journal=journal), False) == "reset"
    b = boot_again(b)
    assert _running(b.root) == "2"
    assert appstore.state(b.root)["state"] == "TRYING"
    job = Job(b, None, config=otaimage.config(), journal=journal)
    assert op.resume(job) == {"version": "2", "previous": "1"}
    assert job.updates == [("IN_PROGRESS", {"step": "self-test", "version": "2"})]
    assert appstore.state(b.root) == {"dir": "b", "version": "2", "state": "VALID"}
    with open(b.root + "/app/a/main_app.py") as f:
        assert f.read() == "VERSION = '1'\n"  # the previous version is kept
    assert _running(b.root) == "2"


def test_every_interruption_leaves_a_runnable_application_and_the_update_completes():
    files = _v2_files("every")
    for reset_at in range(1, 6):
        b = _app_v1()
        journal = b.root + "/journal.json"
        op = ops.find("ota.files")
        job = Job(b, _doc(files), config=otaimage.config(), journal=journal)
        job.reset_at = reset_at
        outcome = _step(op, job, False)
        resets = 0
        while outcome == "reset":
            resets += 1
            assert resets < 5
            b = boot_again(b)
            assert _running(b.root) in ("1", "2")
            outcome = _step(op, Job(b, None, config=otaimage.config(), journal=journal), True)
        assert outcome["version"] == "2", (reset_at, outcome)
        assert _running(b.root) == "2"


def test_reset_before_commit_rolls_back_to_the_previous_files():
    b = _app_v1()
    journal = b.root + "/journal.json"
    op = ops.find("ota.files")
    assert (
        _step(op, Job(b, _doc(_v2_files("rb")), config=otaimage.config(), journal=journal), False) == "reset"
    )
    b = boot_again(b)
    assert _running(b.root) == "2"  # TRYING
    b = boot_again(b)  # the new application reset before its self-test
    assert _running(b.root) == "1"
    with raises(ops.Failed) as caught:
        op.resume(Job(b, None, config=otaimage.config(), journal=journal))
    assert caught.value.args[0] == "rolled back"
    assert _running(b.root) == "1"


def _fails_untouched(doc):
    b = _app_v1()
    op, doc, reason = ops.prepare(doc, b)
    assert reason is None, reason
    with raises(ops.Failed) as caught:
        op.run(Job(b, doc, config=otaimage.config()))
    assert appstore.state(b.root) == {"dir": "a", "version": "1", "state": "VALID"}
    assert _running(b.root) == "1"
    assert sorted(os.listdir(b.root + "/app")) == ["a", "app.json"]  # staging removed
    return caught.value.args[0]


def test_missing_file_fails_and_the_application_is_untouched():
    files = _v2_files("missing")
    files[1]["url"] = otaimage.url("not-there.py")
    assert _fails_untouched(_doc(files)) == "download: HTTP 404"


def test_corrupted_file_fails_and_the_application_is_untouched():
    files = _v2_files("corrupt")
    files[1]["sha256"] = "0" * 64
    reason = _fails_untouched(_doc(files))
    assert reason.startswith("sha256 mismatch for "), reason


def test_file_larger_than_declared_fails_and_the_application_is_untouched():
    files = _v2_files("big")
    files[0]["size"] -= 1
    reason = _fails_untouched(_doc(files))
    assert reason.startswith("download: size mismatch: server has "), reason


_DELETE = object()


def test_bad_file_lists_are_rejected():
    b = _app_v1()
    base = _v2_files("bad")
    changes = (  # (file index, key, new value or _DELETE, reason)
        (0, "path", "../boot.py", "files[0].path: .. not allowed"),
        (1, "path", "main_app.py", "files[1].path: listed twice"),
        (0, "size", 600000, "files[0].size: at most 524288"),
        (0, "sha256", _DELETE, "files[0].sha256: required"),
        (1, "path", "/boot.py", "files[1].path: must be relative, without a leading /"),
        (1, "path", "lib//helper.py", "files[1].path: empty name (// or a trailing /) not allowed"),
        (1, "path", "lib/", "files[1].path: empty name (// or a trailing /) not allowed"),
        (1, "path", "./main_app.py", "files[1].path: . not allowed"),
        (
            1,
            "path",
            "main_app.py.part",
            "files[1].path: main_app.py.part not allowed (.part is kept for downloads)",
        ),
        (0, "colour", "red", "files[0]: unknown parameter colour"),
        (0, "url", "https://user@host/x", "files[0].url: bad host in URL"),
    )
    cases = []
    for i, key, value, reason in changes:
        doc = _doc(base)
        if value is _DELETE:
            del doc["files"][i][key]
        else:
            doc["files"][i][key] = value
        cases.append((doc, reason))
    doc = _doc(base)
    doc["files"] = doc["files"] * 9
    cases.append((doc, "files: at most 16 items"))
    cases.append(({"operation": "ota.files", "files": []}, "files: at least 1 items"))
    for doc, reason in cases:
        assert ops.prepare(doc, b)[2] == reason, ops.prepare(doc, b)


def test_file_download_writes_atomically_and_checks_the_hash():
    b = fresh_board()
    item = _serve("plain.txt", "hello file")
    doc = {
        "operation": "file.download",
        "url": item["url"],
        "path": "data/plain.txt",
        "sha256": item["sha256"],
    }
    op, doc, reason = ops.prepare(doc, b)
    assert reason is None, reason
    assert op.run(Job(b, doc, config=otaimage.config())) == {"path": "data/plain.txt", "size": "10"}
    with open(b.root + "/data/plain.txt") as f:
        assert f.read() == "hello file"
    bad = dict(doc, sha256="0" * 64)
    with raises(ops.Failed) as caught:
        op.run(Job(b, bad, config=otaimage.config()))
    assert caught.value.args[0].startswith("sha256 mismatch"), caught.value.args
    with open(b.root + "/data/plain.txt") as f:
        assert f.read() == "hello file"
    assert os.listdir(b.root + "/data") == ["plain.txt"]


def test_aws_download_file_with_a_sha256_arg_runs():
    b = fresh_board()
    item = _serve("aws.txt", "from the template")
    doc = {"operation": "download-file.sh", "args": [item["url"], "downloads/aws.txt", item["sha256"]]}
    op, doc, reason = ops.prepare(doc, b)
    assert reason is None, reason
    op.run(Job(b, doc, config=otaimage.config()))
    with open(b.root + "/downloads/aws.txt") as f:
        assert f.read() == "from the template"
    absolute = {"operation": "download-file.sh", "args": [item["url"], "/downloads/aws.txt", item["sha256"]]}
    assert ops.prepare(absolute, b)[2] == "path: must be relative, without a leading /"


def test_file_download_refuses_protected_paths():
    b = fresh_board()
    doc = {"operation": "file.download", "url": "https://h/x", "sha256": "0" * 64}
    for path, reason in (
        ("config.json", "path: config.json is not writable by jobs"),
        ("app/a/main.py", "path: app is not writable by jobs"),
        ("data/../config.json", "path: .. not allowed"),
        ("/boot.py", "path: must be relative, without a leading /"),
        ("/data/x.csv", "path: must be relative, without a leading /"),
        ("data//x.csv", "path: empty name (// or a trailing /) not allowed"),
        ("data/x.csv.part", "path: x.csv.part not allowed (.part is kept for downloads)"),
    ):
        assert ops.prepare(dict(doc, path=path), b)[2] == reason, (path, ops.prepare(dict(doc, path=path), b))
    assert ops.prepare(dict(doc, path="data/x.csv"), b)[2] is None


def test_resume_in_the_engines_running_phase_starts_over():
    b = _app_v1()
    job = Job(b, _doc(_v2_files("running")), config=otaimage.config())
    job.phase = "running"  # the engine's phase: reset before the handler's first checkpoint
    assert _step(ops.find("ota.files"), job, True) == "reset"
    assert appstore.state(b.root)["state"] == "NEW"
