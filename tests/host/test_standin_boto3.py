"""boto3 with endpoint_url drives the control plane (and the HTTPS data plane) as it drives AWS."""

import json

import boto3
import pytest
from botocore.exceptions import ClientError

from tools.standin import StandIn
from tools.standin.device import Device


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    with StandIn(tmp_path_factory.mktemp("standin")) as stand_in:
        yield stand_in


def _client(aws, service):
    return boto3.client(
        service,
        endpoint_url=aws.control_url,
        region_name="us-east-1",
        aws_access_key_id="standin",
        aws_secret_access_key="standin",
    )


@pytest.fixture(scope="module")
def iot(aws):
    return _client(aws, "iot")


def _code(err) -> str:
    return err.value.response["Error"]["Code"]


def test_things_groups_and_endpoint(aws, iot):
    made = iot.create_thing(thingName="boto-1", attributePayload={"attributes": {"board": "esp32"}})
    assert made["thingArn"] == "arn:aws:iot:us-east-1:123456789012:thing/boto-1"
    described = iot.describe_thing(thingName="boto-1")
    assert described["defaultClientId"] == "boto-1" and described["attributes"] == {"board": "esp32"}
    group = iot.create_thing_group(thingGroupName="fleet-a")
    assert group["thingGroupArn"].endswith(":thinggroup/fleet-a")
    iot.add_thing_to_thing_group(thingGroupName="fleet-a", thingName="boto-1")
    assert iot.describe_thing_group(thingGroupName="fleet-a")["thingGroupName"] == "fleet-a"
    assert iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"] == "localhost"
    assert aws.thing("boto-1", "ec").cert_der.is_file()  # a certificate for a thing made by boto3
    assert iot.describe_thing(thingName="boto-1")["attributes"] == {"board": "esp32"}
    with pytest.raises(ClientError) as err:
        iot.describe_thing(thingName="nobody")
    assert _code(err) == "ResourceNotFoundException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_job_life_cycle_through_boto3(aws, iot):
    dev = Device.connect(aws, "boto-dev")
    try:
        iot.create_thing_group(thingGroupName="fleet-b")
        iot.add_thing_to_thing_group(thingGroupName="fleet-b", thingName="boto-dev")
        group_arn = iot.describe_thing_group(thingGroupName="fleet-b")["thingGroupArn"]
        created = iot.create_job(
            jobId="boto-job",
            targets=[group_arn],
            document=json.dumps({"operation": "reboot"}),
            description="reboot the fleet",
            timeoutConfig={"inProgressTimeoutInMinutes": 30},
            jobExecutionsRetryConfig={"criteriaList": [{"failureType": "FAILED", "numberOfRetries": 2}]},
        )
        assert created["jobId"] == "boto-job" and created["description"] == "reboot the fleet"
        assert dev.expect("notify-next")["execution"]["jobId"] == "boto-job"
        with pytest.raises(ClientError) as err:
            iot.create_job(jobId="boto-job", targets=[group_arn], document="{}")
        assert _code(err) == "ResourceAlreadyExistsException"
        job = iot.describe_job(jobId="boto-job")["job"]
        assert job["status"] == "IN_PROGRESS" and job["jobProcessDetails"]["numberOfQueuedThings"] == 1
        assert job["timeoutConfig"] == {"inProgressTimeoutInMinutes": 30}
        assert json.loads(iot.get_job_document(jobId="boto-job")["document"]) == {"operation": "reboot"}
        assert dev.request("start-next").accepted
        execution = iot.describe_job_execution(jobId="boto-job", thingName="boto-dev")["execution"]
        assert execution["status"] == "IN_PROGRESS" and execution["versionNumber"] == 2
        assert execution["thingArn"].endswith(":thing/boto-dev")
        assert execution["approximateSecondsBeforeTimedOut"] > 1700
        with pytest.raises(ClientError) as err:
            iot.cancel_job_execution(jobId="boto-job", thingName="boto-dev")
        assert _code(err) == "InvalidStateTransitionException"
        with pytest.raises(ClientError) as err:
            iot.cancel_job_execution(jobId="boto-job", thingName="boto-dev", force=True, expectedVersion=7)
        assert _code(err) == "VersionConflictException"
        iot.cancel_job_execution(
            jobId="boto-job", thingName="boto-dev", force=True, statusDetails={"why": "operator"}
        )
        while dev.expect("notify")["jobs"]:  # skip the one from the creation
            pass
        assert "execution" not in dev.expect("notify-next")
        for_job = iot.list_job_executions_for_job(jobId="boto-job")["executionSummaries"]
        assert for_job[0]["jobExecutionSummary"]["status"] == "CANCELED"
        for_thing = iot.list_job_executions_for_thing(thingName="boto-dev")["executionSummaries"]
        assert [s["jobId"] for s in for_thing] == ["boto-job"]
        listed = iot.list_jobs(status="COMPLETED")["jobs"]
        assert [j["jobId"] for j in listed] == ["boto-job"]
        iot.delete_job(jobId="boto-job")
        with pytest.raises(ClientError) as err:
            iot.describe_job(jobId="boto-job")
        assert _code(err) == "ResourceNotFoundException"
    finally:
        dev.close()


def test_cancel_job_and_delete_with_force(aws, iot):
    iot.create_thing(thingName="boto-2")
    arn = iot.describe_thing(thingName="boto-2")["thingArn"]
    iot.create_job(jobId="boto-cancel", targets=[arn], document="{}")
    with pytest.raises(ClientError) as err:
        iot.delete_job(jobId="boto-cancel")
    assert _code(err) == "InvalidStateTransitionException"
    canceled = iot.cancel_job(jobId="boto-cancel", reasonCode="OPERATOR", comment="no longer needed")
    assert canceled["jobId"] == "boto-cancel"
    job = iot.describe_job(jobId="boto-cancel")["job"]
    assert job["status"] == "CANCELED" and job["jobProcessDetails"]["numberOfCanceledThings"] == 1
    iot.delete_job(jobId="boto-cancel", force=True)
    assert "boto-cancel" not in [j["jobId"] for j in iot.list_jobs()["jobs"]]


def test_continuous_job_reaches_later_group_members(aws, iot):
    iot.create_thing_group(thingGroupName="fleet-c")
    group_arn = iot.describe_thing_group(thingGroupName="fleet-c")["thingGroupArn"]
    iot.create_job(jobId="boto-cont", targets=[group_arn], document="{}", targetSelection="CONTINUOUS")
    iot.create_thing(thingName="boto-late")
    iot.add_thing_to_thing_group(thingGroupName="fleet-c", thingName="boto-late")
    summaries = iot.list_job_executions_for_job(jobId="boto-cont")["executionSummaries"]
    assert [s["thingArn"].rsplit("/", 1)[1] for s in summaries] == ["boto-late"]
    assert iot.list_jobs(targetSelection="CONTINUOUS")["jobs"][0]["jobId"] == "boto-cont"
    iot.remove_thing_from_thing_group(thingGroupName="fleet-c", thingName="boto-late")
    execution = iot.describe_job_execution(jobId="boto-cont", thingName="boto-late")["execution"]
    assert execution["status"] == "REMOVED"


@pytest.mark.parametrize(
    "kwargs, code",
    [
        ({"jobId": "bad id!", "document": "{}"}, "InvalidRequestException"),
        ({"jobId": "ok-1", "document": "{}", "targets": ["not-an-arn"]}, "InvalidRequestException"),
        ({"jobId": "ok-2", "document": "{}", "targets": ["arn:aws:iot:us-east-1:123456789012:thing/ghost"]},
         "ResourceNotFoundException"),
        ({"jobId": "ok-3", "document": "{}", "timeoutConfig": {"inProgressTimeoutInMinutes": 0}},
         "InvalidRequestException"),
        ({"jobId": "ok-4", "document": "{}", "jobExecutionsRetryConfig": {"criteriaList": [
            {"failureType": "REJECTED", "numberOfRetries": 1}]}}, "InvalidRequestException"),
        # a thing of the same name in another region or account is not this endpoint's
        ({"jobId": "ok-5", "document": "{}", "targets": ["arn:aws:iot:eu-west-1:123456789012:thing/boto-3"]},
         "InvalidRequestException"),
        ({"jobId": "ok-6", "document": "{}", "targets": ["arn:aws:iot:us-east-1:999999999999:thing/boto-3"]},
         "InvalidRequestException"),
        ({"jobId": "ok-7", "document": "{}", "targets": [
            "arn:aws:iot:us-east-1:123456789012:thing/boto-3",
            "arn:aws:iot:us-west-2:123456789012:thinggroup/fleet-a"]}, "InvalidRequestException"),
    ],
)  # fmt: skip
def test_bad_requests_get_aws_errors_not_stack_traces(aws, iot, kwargs, code):
    iot.create_thing(thingName="boto-3")
    kwargs.setdefault("targets", ["arn:aws:iot:us-east-1:123456789012:thing/boto-3"])
    with pytest.raises(ClientError) as err:
        iot.create_job(**kwargs)
    assert _code(err) == code
    message = err.value.response["Error"]["Message"]
    assert "Traceback" not in message
    if kwargs["jobId"] in ("ok-5", "ok-6", "ok-7"):
        assert "serves region us-east-1, account 123456789012" in message
        with pytest.raises(ClientError):  # nothing was created
            iot.describe_job(jobId=kwargs["jobId"])


def test_data_plane_is_routed_by_the_signing_service(aws):
    jobs_data = _client(aws, "iot-jobs-data")
    aws.thing("boto-data")
    aws.create_job("boto-data-job", {"operation": "x"}, ["boto-data"])
    pending = jobs_data.get_pending_job_executions(thingName="boto-data")
    assert [s["jobId"] for s in pending["queuedJobs"]] == ["boto-data-job"]
    started = jobs_data.start_next_pending_job_execution(thingName="boto-data")["execution"]
    assert started["status"] == "IN_PROGRESS" and json.loads(started["jobDocument"]) == {"operation": "x"}
    updated = jobs_data.update_job_execution(
        thingName="boto-data", jobId="boto-data-job", status="SUCCEEDED", includeJobExecutionState=True
    )
    assert updated["executionState"]["status"] == "SUCCEEDED"
    with pytest.raises(ClientError) as err:
        jobs_data.update_job_execution(thingName="boto-data", jobId="boto-data-job", status="IN_PROGRESS")
    assert _code(err) == "InvalidStateTransitionException"
    # the same path signed for `iot` is the control plane's ListJobExecutionsForThing
    control = _client(aws, "iot").list_job_executions_for_thing(thingName="boto-data")
    assert control["executionSummaries"][0]["jobExecutionSummary"]["status"] == "SUCCEEDED"


def test_managed_job_templates(aws, iot):
    names = [t["templateName"] for t in iot.list_managed_job_templates()["managedJobTemplates"]]
    assert "AWS-Reboot" in names and "AWS-Download-File" in names and len(names) == 8
    described = iot.describe_managed_job_template(templateName="AWS-Download-File", templateVersion="1.0")
    keys = {p["key"]: p["optional"] for p in described["documentParameters"]}
    assert keys == {"downloadUrl": False, "filePath": False, "runAsUser": True, "pathToHandler": True}
    assert "${aws:iot:parameter:downloadUrl}" in described["document"]
    iot.create_thing(thingName="boto-tpl")
    iot.create_job(
        jobId="boto-tpl-job",
        targets=["arn:aws:iot:us-east-1:123456789012:thing/boto-tpl"],
        jobTemplateArn=described["templateArn"],
        documentParameters={"downloadUrl": "https://example.com/f", "filePath": "/f"},
    )
    document = json.loads(iot.get_job_document(jobId="boto-tpl-job")["document"])
    assert document["steps"][0]["action"]["input"]["args"] == ["https://example.com/f", "/f"]
    with pytest.raises(ClientError) as err:
        iot.describe_managed_job_template(templateName="AWS-Nothing")
    assert _code(err) == "ResourceNotFoundException"
