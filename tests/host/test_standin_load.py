"""A small load test in the suite (the full one: python -m tools.standin.loadtest --devices 500)."""

import pytest

from tools.standin import StandIn
from tools.standin.loadtest import run


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    with StandIn(tmp_path_factory.mktemp("standin")) as stand_in:
        yield stand_in


def test_fifty_devices_run_five_jobs_each_to_success(aws):
    result = run(aws, devices=50, jobs=5, timeout=120)
    print(result.summary())
    assert result.terminal == {"SUCCEEDED": 250}
    assert result.requests == 50 * (5 * 3 + 1)  # per job start-next + 2 updates, + the final start-next
    assert result.errors == {}
    for job_id in (f"load-job-{j}" for j in range(5)):
        assert aws.describe_job(job_id)["status"] == "COMPLETED"


def test_devices_ride_through_throttling(aws):
    aws.set_faults(throttle_every=7)
    try:
        result = run(aws, devices=20, jobs=2, timeout=120, prefix="throttled")
    finally:
        aws.set_faults()
    assert result.terminal == {"SUCCEEDED": 40}
    assert result.errors.get("RequestThrottled", 0) > 0
