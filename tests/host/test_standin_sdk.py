"""The AWS IoT Device SDK v2 for Python (awsiotsdk) parses everything the Jobs service sends.

The SDK's IotJobsClient connects over mutual TLS (awscrt) to the stand-in's broker, as a device
would connect to AWS IoT, and drives every operation; each callback receives the SDK's model.
"""

import queue

import pytest
from awscrt import mqtt
from awsiot import iotjobs, mqtt_connection_builder

from tools.standin import StandIn

THING = "sdk-thing"


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    with StandIn(tmp_path_factory.mktemp("standin")) as stand_in:
        yield stand_in


@pytest.fixture(scope="module")
def sdk(aws):
    ident = aws.thing(THING, "rsa")
    connection = mqtt_connection_builder.mtls_from_path(
        endpoint="localhost",
        port=aws.port,
        cert_filepath=str(ident.cert_pem),
        pri_key_filepath=str(ident.key_pem),
        ca_filepath=str(aws.ca.cert_pem),
        client_id=THING,
        clean_session=True,
        keep_alive_secs=30,
    )
    connection.connect().result(10)
    client = iotjobs.IotJobsClient(connection)
    events: dict = {}

    def subscribe(name, method, request):
        events[name] = queue.Queue()
        future, _ = method(request, mqtt.QoS.AT_LEAST_ONCE, events[name].put)
        future.result(10)

    thing_only = {"thing_name": THING}
    with_job = {"thing_name": THING, "job_id": "+"}
    subscribe(
        "notify",
        client.subscribe_to_job_executions_changed_events,
        iotjobs.JobExecutionsChangedSubscriptionRequest(**thing_only),
    )
    subscribe(
        "notify-next",
        client.subscribe_to_next_job_execution_changed_events,
        iotjobs.NextJobExecutionChangedSubscriptionRequest(**thing_only),
    )
    subscribe(
        "get/accepted",
        client.subscribe_to_get_pending_job_executions_accepted,
        iotjobs.GetPendingJobExecutionsSubscriptionRequest(**thing_only),
    )
    subscribe(
        "start-next/accepted",
        client.subscribe_to_start_next_pending_job_execution_accepted,
        iotjobs.StartNextPendingJobExecutionSubscriptionRequest(**thing_only),
    )
    subscribe(
        "start-next/rejected",
        client.subscribe_to_start_next_pending_job_execution_rejected,
        iotjobs.StartNextPendingJobExecutionSubscriptionRequest(**thing_only),
    )
    subscribe(
        "describe/accepted",
        client.subscribe_to_describe_job_execution_accepted,
        iotjobs.DescribeJobExecutionSubscriptionRequest(**with_job),
    )
    subscribe(
        "describe/rejected",
        client.subscribe_to_describe_job_execution_rejected,
        iotjobs.DescribeJobExecutionSubscriptionRequest(**with_job),
    )
    subscribe(
        "update/accepted",
        client.subscribe_to_update_job_execution_accepted,
        iotjobs.UpdateJobExecutionSubscriptionRequest(**with_job),
    )
    subscribe("update/rejected", client.subscribe_to_update_job_execution_rejected,
              iotjobs.UpdateJobExecutionSubscriptionRequest(**with_job))  # fmt: skip
    yield client, events
    connection.disconnect().result(10)


def _next(events, name):
    try:
        return events[name].get(timeout=10)
    except queue.Empty:
        raise AssertionError(f"the SDK delivered nothing on {name} (unparsable or not sent)") from None


def test_sdk_parses_every_response_and_notification(aws, sdk):
    client, events = sdk
    qos = mqtt.QoS.AT_LEAST_ONCE
    aws.create_job("sdk-job-1", {"operation": "reboot"}, [THING])
    aws.create_job("sdk-job-2", {"operation": "noop"}, [THING])

    changed = _next(events, "notify")
    assert isinstance(changed, iotjobs.JobExecutionsChangedEvent)
    assert [s.job_id for s in changed.jobs["QUEUED"]] == ["sdk-job-1"]
    nxt = _next(events, "notify-next")
    assert isinstance(nxt, iotjobs.NextJobExecutionChangedEvent)
    assert nxt.execution.job_id == "sdk-job-1" and nxt.execution.job_document == {"operation": "reboot"}
    assert nxt.execution.status == iotjobs.JobStatus.QUEUED and nxt.execution.thing_name is None
    assert [s.job_id for s in _next(events, "notify").jobs["QUEUED"]] == ["sdk-job-1", "sdk-job-2"]

    client.publish_get_pending_job_executions(
        iotjobs.GetPendingJobExecutionsRequest(thing_name=THING, client_token="sdk-get"), qos
    ).result(10)
    pending = _next(events, "get/accepted")
    assert pending.client_token == "sdk-get" and pending.in_progress_jobs == []
    assert [s.job_id for s in pending.queued_jobs] == ["sdk-job-1", "sdk-job-2"]
    assert pending.queued_jobs[0].version_number == 1 and pending.timestamp.year >= 2024

    client.publish_start_next_pending_job_execution(
        iotjobs.StartNextPendingJobExecutionRequest(
            thing_name=THING,
            client_token="sdk-start",
            status_details={"step": "1"},
            step_timeout_in_minutes=5,
        ),
        qos,
    ).result(10)
    started = _next(events, "start-next/accepted")
    assert started.client_token == "sdk-start" and started.execution.version_number == 2
    assert started.execution.status == iotjobs.JobStatus.IN_PROGRESS and started.execution.started_at

    client.publish_describe_job_execution(
        iotjobs.DescribeJobExecutionRequest(
            thing_name=THING, job_id="sdk-job-1", client_token="sdk-describe", include_job_document=True
        ),
        qos,
    ).result(10)
    described = _next(events, "describe/accepted")
    assert described.execution.status_details == {"step": "1"}

    client.publish_describe_job_execution(
        iotjobs.DescribeJobExecutionRequest(thing_name=THING, job_id="missing", client_token="sdk-missing"),
        qos,
    ).result(10)
    missing = _next(events, "describe/rejected")
    assert isinstance(missing, iotjobs.RejectedError)
    assert (
        missing.code == iotjobs.RejectedErrorCode.RESOURCE_NOT_FOUND and missing.client_token == "sdk-missing"
    )

    client.publish_update_job_execution(
        iotjobs.UpdateJobExecutionRequest(
            thing_name=THING,
            job_id="sdk-job-1",
            status="SUCCEEDED",
            expected_version=9,
            client_token="sdk-bad",
        ),
        qos,
    ).result(10)
    mismatch = _next(events, "update/rejected")
    assert mismatch.code == iotjobs.RejectedErrorCode.VERSION_MISMATCH
    assert mismatch.execution_state.status == iotjobs.JobStatus.IN_PROGRESS
    assert mismatch.execution_state.version_number == 2

    client.publish_update_job_execution(
        iotjobs.UpdateJobExecutionRequest(
            thing_name=THING,
            job_id="sdk-job-1",
            status="SUCCEEDED",
            status_details={"result": "ok"},
            expected_version=2,
            include_job_execution_state=True,
            include_job_document=True,
            client_token="sdk-done",
        ),
        qos,
    ).result(10)
    done = _next(events, "update/accepted")
    assert done.client_token == "sdk-done" and done.execution_state.version_number == 3
    assert done.execution_state.status_details == {"result": "ok"} and done.job_document == {
        "operation": "reboot"
    }
    assert [s.job_id for s in _next(events, "notify").jobs["QUEUED"]] == ["sdk-job-2"]
    assert _next(events, "notify-next").execution.job_id == "sdk-job-2"

    client.publish_update_job_execution(
        iotjobs.UpdateJobExecutionRequest(thing_name=THING, job_id="sdk-job-2", status="REJECTED"), qos
    ).result(10)
    assert _next(events, "update/accepted").client_token is None
    assert _next(events, "notify").jobs == {}
    empty = _next(events, "notify-next")
    assert empty.execution is None and empty.timestamp is not None

    client.publish_start_next_pending_job_execution(
        iotjobs.StartNextPendingJobExecutionRequest(thing_name=THING, client_token="sdk-none"), qos
    ).result(10)
    nothing = _next(events, "start-next/accepted")
    assert nothing.execution is None and nothing.client_token == "sdk-none"
