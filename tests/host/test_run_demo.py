"""`make run`: every demonstration job reaches its expected state, and everything is stopped."""

import os
from pathlib import Path

from tools import run


def processes_using(folder: Path) -> list[str]:
    """Command lines of live processes whose cwd or arguments lie in `folder`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if str(folder) in cmdline or cwd.startswith(str(folder)):
            found.append(cmdline)
    return found


def test_every_demo_job_reaches_its_expected_state(tmp_path, capsys):
    state = tmp_path / "run"
    assert run.main(["--state", str(state), "--timeout", "90"]) == 0
    out = capsys.readouterr().out
    assert "all 9 demonstration jobs reached their expected state" in out
    for job in run.demo_jobs():
        assert f"ok  {job.job_id}" in out
    assert "application version demo-app-2 after the ota.files update" in out
    assert processes_using(state) == []


def test_a_wrong_outcome_fails_the_run(tmp_path, capsys, monkeypatch):
    jobs = run.demo_jobs()
    jobs[0].expect = "FAILED"  # gpio.write LED really succeeds: the summary must say BAD and exit 1
    monkeypatch.setattr(run, "demo_jobs", lambda: jobs)
    assert run.main(["--state", str(tmp_path / "run"), "--timeout", "90"]) == 1
    assert "BAD led-on" in capsys.readouterr().out
