"""`python -m tools.status`: the fleet at a glance, from AWS IoT or from the local stand-in.

Things with whether they are connected and their last telemetry, the latest jobs, and each
job's executions with statusDetails; redrawn every few seconds on a terminal (`--once` prints
one table, `--json` one JSON snapshot, for scripts). Everything comes from AWS's own APIs through
boto3, so the same command works against AWS IoT Core and against the stand-in:

    things        iot ListThings
    connected     iot GetThingConnectivityData (AWS: needs fleet indexing with thing connectivity)
    telemetry     iot-data GetRetainedMessage of logi2/device/<thing> (the device publishes it retained)
    jobs          iot ListJobs, ListJobExecutionsForJob, DescribeJobExecution (statusDetails)

    python -m tools.status --standin build/standin      # the stand-in whose state folder that is
    python -m tools.status --aws [--region eu-west-1]   # your AWS account (boto3's credentials)
"""

import argparse
import json
import sys
import time
from pathlib import Path

TELEMETRY = "logi2/device/{}"


class SourceError(Exception):
    """The status cannot be read (no stand-in there, no credentials): a one-line reason."""


def clients(standin: str | None = None, region: str | None = None, profile: str | None = None):
    """(iot, iot-data) boto3 clients: for the stand-in of state folder `standin`, or for AWS."""
    import boto3
    import botocore.exceptions

    if standin:
        try:
            facts = json.loads((Path(standin) / "standin.json").read_text())
        except (OSError, ValueError):
            raise SourceError(
                f"no stand-in facts in {standin}/standin.json: start one with "
                f"`python -m tools.standin up --state {standin}`"
            ) from None
        local = {
            "endpoint_url": facts["control_url"],
            "region_name": facts.get("region", "us-east-1"),
            "aws_access_key_id": "standin",
            "aws_secret_access_key": "standin",
        }
        return boto3.client("iot", **local), boto3.client("iot-data", **local)
    try:
        session = boto3.Session(profile_name=profile, region_name=region)
        iot = session.client("iot")
        endpoint = iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
    except botocore.exceptions.NoRegionError:
        raise SourceError("no AWS region: give --region or set AWS_REGION") from None
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
        raise SourceError(f"AWS IoT cannot be reached: {err}") from None
    return iot, session.client("iot-data", endpoint_url=f"https://{endpoint}")


def _pages(call, key: str, **params) -> list:
    items, token = [], None
    while True:
        page = call(**params, **({"nextToken": token} if token else {}))
        items += page.get(key, [])
        token = page.get("nextToken")
        if not token:
            return items


def _code(err) -> str:
    return getattr(err, "response", {}).get("Error", {}).get("Code", "")


def _connectivity(iot, thing: str) -> dict:
    from botocore.exceptions import ClientError

    try:
        answer = iot.get_thing_connectivity_data(thingName=thing)
    except ClientError as err:  # e.g. fleet indexing's connectivity not enabled on AWS
        return {"connected": None, "error": f"{_code(err)}: {err.response['Error'].get('Message', '')}"}
    since = answer.get("timestamp")
    return {
        "connected": answer.get("connected"),
        "since": since.timestamp() if since else None,
        "disconnectReason": answer.get("disconnectReason"),
    }


def _telemetry(data, thing: str, retained_topics: set) -> dict | None:
    topic = TELEMETRY.format(thing)
    if topic not in retained_topics:
        return None
    answer = data.get_retained_message(topic=topic)
    payload = answer.get("payload") or b""
    try:
        values = json.loads(payload)
    except ValueError:
        values = {"raw": payload.decode(errors="replace")}
    return {"at": answer["lastModifiedTime"] / 1000.0, "values": values}


def collect(iot, data, jobs: int = 10) -> dict:
    """One snapshot: {"things": [...], "jobs": [...]} (the `jobs` newest jobs, with executions)."""
    retained_topics = {r["topic"] for r in _pages(data.list_retained_messages, "retainedTopics")}
    things = []
    for thing in _pages(iot.list_things, "things"):
        name = thing["thingName"]
        things.append(
            {
                "thing": name,
                **_connectivity(iot, name),
                "telemetry": _telemetry(data, name, retained_topics),
            }
        )
    listed = sorted(_pages(iot.list_jobs, "jobs"), key=lambda j: j["createdAt"], reverse=True)[:jobs]
    found = []
    for job in listed:
        executions = []
        for summary in _pages(iot.list_job_executions_for_job, "executionSummaries", jobId=job["jobId"]):
            thing = summary["thingArn"].rsplit("/", 1)[-1]
            execution = iot.describe_job_execution(jobId=job["jobId"], thingName=thing)["execution"]
            executions.append(
                {
                    "thing": thing,
                    "status": execution["status"],
                    "executionNumber": execution.get("executionNumber"),
                    "versionNumber": execution.get("versionNumber"),
                    "updated": _seconds(execution.get("lastUpdatedAt")),
                    "statusDetails": (execution.get("statusDetails") or {}).get("detailsMap") or {},
                }
            )
        found.append(
            {
                "jobId": job["jobId"],
                "status": job["status"],
                "created": _seconds(job["createdAt"]),
                "executions": executions,
            }
        )
    return {"at": time.time(), "things": things, "jobs": found}


def _seconds(value):
    return value.timestamp() if hasattr(value, "timestamp") else value


def _age(then, now: float) -> str:
    if then is None:
        return "-"
    seconds = max(0, int(now - then))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def _connected_text(thing: dict, now: float) -> str:
    if thing["connected"] is None:
        return "unknown (" + thing.get("error", "")[:40] + ")"
    if thing["connected"]:
        return "yes, " + _age(thing.get("since"), now).replace(" ago", "")
    reason = thing.get("disconnectReason")
    return "no" + (f" ({reason}, {_age(thing.get('since'), now)})" if reason else "")


def render(snapshot: dict, width: int = 120) -> str:
    now = snapshot["at"]
    lines = ["THINGS", f"{'thing':<24} {'connected':<40} last telemetry"]
    for thing in snapshot["things"]:
        telemetry = thing["telemetry"]
        text = "-"
        if telemetry:
            values = " ".join(f"{k}={v}" for k, v in telemetry["values"].items())
            text = f"{_age(telemetry['at'], now)}: {values}"
        lines.append(f"{thing['thing'][:24]:<24} {_connected_text(thing, now)[:40]:<40} {text}"[:width])
    lines += ["", "JOBS (newest first)", f"{'job':<28} {'status':<12} {'created':<10} executions"]
    for job in snapshot["jobs"]:
        counts: dict = {}
        for execution in job["executions"]:
            counts[execution["status"]] = counts.get(execution["status"], 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "-"
        lines.append(f"{job['jobId'][:28]:<28} {job['status']:<12} {_age(job['created'], now):<10} {summary}")
    lines += [
        "",
        "EXECUTIONS",
        f"{'job':<28} {'thing':<20} {'status':<12} {'#':>2} {'updated':<9} statusDetails",
    ]
    for job in snapshot["jobs"]:
        for execution in job["executions"]:
            details = " ".join(f"{k}={v}" for k, v in execution["statusDetails"].items())
            lines.append(
                f"{job['jobId'][:28]:<28} {execution['thing'][:20]:<20} {execution['status']:<12} "
                f"{execution['executionNumber'] or '':>2} {_age(execution['updated'], now):<9} {details}"[
                    :width
                ]
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.status",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--standin", metavar="DIR", help="the stand-in of this state folder (its standin.json)"
    )
    source.add_argument("--aws", action="store_true", help="AWS IoT Core, with boto3's usual credentials")
    parser.add_argument("--region", help="AWS region (with --aws)")
    parser.add_argument("--profile", help="AWS profile (with --aws)")
    parser.add_argument("--jobs", type=int, default=10, help="how many of the newest jobs (default 10)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between redraws (default 2)")
    parser.add_argument("--once", action="store_true", help="print the table once and exit")
    parser.add_argument("--json", action="store_true", help="print one JSON snapshot and exit")
    args = parser.parse_args(argv)
    if args.jobs < 0 or args.interval <= 0:
        parser.error("--jobs must be 0 or more and --interval above 0")
    import botocore.exceptions

    try:
        iot, data = clients(args.standin, args.region, args.profile)
        while True:
            snapshot = collect(iot, data, args.jobs)
            if args.json:
                print(json.dumps(snapshot, indent=2, sort_keys=True))
                return 0
            if args.once:
                print(render(snapshot))
                return 0
            print("\x1b[H\x1b[2J" + render(snapshot), flush=True)
            time.sleep(args.interval)
    except SourceError as err:
        print(f"status: {err}", file=sys.stderr)
        return 1
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
        print(f"status: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
