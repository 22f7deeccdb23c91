# system.reboot, config.set, diag.echo.
import json
import sys

from jobdouble import Job
from jobs import ops
from mptest import raises
from opstate import boot_again, fresh_board


def test_reboot_journals_reports_rebooting_resets_then_succeeds_with_the_reason():
    b = fresh_board()
    journal = b.root + "/journal.json"
    job = Job(b, {"operation": "system.reboot"}, journal=journal)
    op, reason = ops.validate(job.doc, b)
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


class _ConfigStandIn:
    """Only what docs/contracts.md says of jobs.config.apply_remote, for when it is not merged."""

    REMOTE = {"telemetry_period_s": (int, 1, 86400)}

    @staticmethod
    def apply_remote(cfg, values, path):
        for key in values:
            if key not in _ConfigStandIn.REMOTE:
                raise ValueError(key + ": not remotely settable")
            kind, lo, hi = _ConfigStandIn.REMOTE[key]
            if not isinstance(values[key], kind) or not lo <= values[key] <= hi:
                raise ValueError(key + ": out of range")
        cfg.update(values)
        with open(path + ".tmp", "w") as f:
            json.dump(cfg, f)
        import os

        os.rename(path + ".tmp", path)


def _config_module():
    try:
        from jobs import config

        if hasattr(config, "apply_remote"):
            return None
    except ImportError:
        pass
    sys.modules["jobs.config"] = _ConfigStandIn
    import jobs

    jobs.config = _ConfigStandIn
    return _ConfigStandIn


def test_config_set_applies_through_apply_remote_and_fails_with_its_reason():
    stand_in = _config_module()
    b = fresh_board()
    calls = []
    from jobs import config

    real = config.apply_remote

    def spy(cfg, values, path):
        calls.append((dict(values), path))
        return real(cfg, values, path)

    config.apply_remote = spy
    try:
        cfg = {"telemetry_period_s": 60}
        doc = {"operation": "config.set", "values": {"telemetry_period_s": 30}}
        op, reason = ops.validate(doc, b)
        assert reason is None
        job = Job(b, doc, config=cfg)
        if stand_in is not None:
            assert op.run(job) == {"applied": "telemetry_period_s"}
            with open(b.root + "/config.json") as f:
                assert json.load(f)["telemetry_period_s"] == 30
        else:
            try:
                op.run(job)
            except ops.Failed:
                pass  # the real schema may differ; the call below is what this op owes
        assert calls[0] == ({"telemetry_period_s": 30}, b.root + "/config.json")
        bad = Job(b, {"operation": "config.set", "values": {"thing_name": "evil"}}, config=cfg)
        with raises(ops.Failed) as caught:
            op.run(bad)
        assert "thing_name" in caught.value.args[0]
    finally:
        config.apply_remote = real
    assert ops.validate({"operation": "config.set", "values": {}}, b) == (None, "values: at least 1 keys")
    assert ops.validate({"operation": "config.set", "values": [1]}, b) == (None, "values: object expected")


def test_diag_echo_reports_diagnostics_and_a_bounded_echo():
    b = fresh_board()
    doc = {"operation": "diag.echo", "message": "hello\nthere"}
    op, reason = ops.validate(doc, b)
    assert reason is None
    details = op.run(Job(b, doc))
    assert details["echo"] == "hello there"
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
    assert ops.validate(long, b) == (None, "message: at most 256 characters")
