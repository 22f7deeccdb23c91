# system.reboot, config.set, diag.echo.
import json

from jobdouble import Job
from jobs import ops
from mptest import raises
from opstate import boot_again, fresh_board


def test_reboot_journals_reports_rebooting_resets_then_succeeds_with_the_reason():
    b = fresh_board()
    journal = b.root + "/journal.json"
    job = Job(b, {"operation": "system.reboot"}, journal=journal)
    op, job.doc, reason = ops.prepare(job.doc, b)
    assert reason is None
    with raises(SystemExit) as caught:
        op.run(job)
    assert caught.value.args[0] == 75
    assert job.updates == [("IN_PROGRESS", {"step": "rebooting"})]
    b = boot_again(b)
    after = Job(b, None, journal=journal)
    assert after.phase == "reboot"
    details = ops.find(after.doc["operation"]).resume(after)
    assert details == {"step": "rebooted", "resetReason": "job job-1"}


def test_config_set_checks_keys_before_running_applies_and_persists():
    from jobs import config

    b = fresh_board()
    path = b.root + "/config.json"
    with open(path, "w") as f:
        json.dump({"endpoint": "localhost", "thing_name": "t1"}, f)
    cfg = config.load(path)
    doc = {"operation": "config.set", "values": {"telemetry_interval_s": 30, "retries": 2}}
    op, doc, reason = ops.prepare(doc, b)
    assert reason is None
    assert op.run(Job(b, doc, config=cfg)) == {"applied": "retries,telemetry_interval_s"}
    assert cfg["telemetry_interval_s"] == 30
    with open(path) as f:
        assert json.load(f) == {
            "endpoint": "localhost",
            "thing_name": "t1",
            "telemetry_interval_s": 30,
            "retries": 2,
        }


def test_config_set_of_an_unknown_unsettable_or_out_of_bounds_key_is_rejected():
    b = fresh_board()
    for values, reason in (
        ({"thing_name": "evil"}, "thing_name: not remotely settable"),
        ({"endpoint": "evil.example"}, "endpoint: not remotely settable"),
        ({"no_such_key": 1}, "unknown key no_such_key"),
        ({"retries": 99}, "retries: must be an integer 0..10"),
        ({"query_next_first": 1}, "query_next_first: must be true or false"),
        ({"telemetry_interval_s": 5, "retries": -1}, "retries: must be an integer 0..10"),
        ({}, "values: at least 1 keys"),
        ([1], "values: object expected"),
    ):
        op, _, got = ops.prepare({"operation": "config.set", "values": values}, b)
        assert (op, got) == (None, reason), (values, got)


def test_config_set_that_conflicts_with_the_running_config_fails_and_changes_nothing():
    from jobs import config

    b = fresh_board()
    path = b.root + "/config.json"
    with open(path, "w") as f:
        json.dump({"endpoint": "localhost", "thing_name": "t1", "buffer_size": 4096, "max_document": 4096}, f)
    cfg = config.load(path)
    doc = {"operation": "config.set", "values": {"max_document": 8192}}
    op, doc, reason = ops.prepare(doc, b)
    assert reason is None  # within the schema's bounds: only the running config says no
    with raises(ops.Failed) as caught:
        op.run(Job(b, doc, config=cfg))
    assert caught.value.args[0] == "max_document: must not exceed buffer_size (4096)"
    assert cfg["max_document"] == 4096
    with open(path) as f:
        assert json.load(f)["max_document"] == 4096


def test_diag_echo_reports_diagnostics_and_a_bounded_echo():
    b = fresh_board()
    doc = {"operation": "diag.echo", "message": "hello\nthere"}
    op, doc, reason = ops.prepare(doc, b)
    assert reason is None
    details = op.run(Job(b, doc))
    assert details["echo"] == "hello\nthere"  # as sent; every update makes it valid for AWS
    from jobs import details as D

    assert json.loads(D.encode(details, 2048))["echo"] == "hello there"
    assert int(details["heapFree"]) > 0
    assert int(details["uptime"]) >= 0
    assert details["resetReason"] == "power on"
    assert details["firmware"] == "1.0.0"
    assert details["app"] == "none"
    assert details["board"] == "unix"
    for value in details.values():
        assert isinstance(value, str) and value
    assert "echo" not in op.run(Job(b, {"operation": "diag.echo"}))
    long = {"operation": "diag.echo", "message": "x" * 257}
    assert ops.prepare(long, b)[2] == "message: at most 256 characters"
