"""The live fleet page the control plane serves: `GET /fleet` (the page), its data and its stream.

    GET /fleet                    fleet.html: plain HTML and JavaScript, no build step
    GET /standin/fleet            one snapshot (JSON): things, jobs, executions
    GET /standin/fleet/events     the same as Server-Sent Events, a new one whenever it changes

The page creates and cancels jobs with the control plane's own CreateJob and CancelJob routes
(`PUT /jobs/<id>`, `PUT /jobs/<id>/cancel`), as aws-cli would.
"""

import json
import time
from pathlib import Path

from tools.standin.core import TERMINAL

PAGE = Path(__file__).with_name("fleet.html")
TELEMETRY = "logi2/device/"
_JOBS = 50  # the newest jobs the page shows


def snapshot(engine) -> dict:
    """Things (connection, last retained telemetry), the newest jobs and their latest executions."""
    db = engine.store.read()
    links = {r["thing"]: r for r in db.execute("SELECT * FROM connectivity")}
    telemetry = {
        r["topic"][len(TELEMETRY) :]: r
        for r in db.execute("SELECT * FROM retained WHERE topic LIKE ?", (TELEMETRY + "%",))
    }
    things = []
    for row in db.execute("SELECT name FROM things ORDER BY name"):
        name = row["name"]
        link, last = links.get(name), telemetry.get(name)
        things.append(
            {
                "thing": name,
                "thingArn": engine.arn("thing", name),
                "connected": bool(link and link["connected"]),
                "since": link["stamp"] if link else None,
                "disconnectReason": link["reason"] if link and not link["connected"] else None,
                "telemetry": _telemetry(last),
            }
        )
    jobs = []
    for job in db.execute("SELECT * FROM jobs ORDER BY created DESC LIMIT ?", (_JOBS,)).fetchall():
        executions = db.execute(
            "SELECT * FROM executions e WHERE job_id = ? AND execution_number = "
            "(SELECT MAX(execution_number) "
            "FROM executions WHERE job_id = e.job_id AND thing = e.thing) ORDER BY seq",
            (job["job_id"],),
        ).fetchall()
        body = json.loads(job["body"])
        jobs.append(
            {
                "jobId": job["job_id"],
                "status": job["status"],
                "description": body.get("description"),
                "created": job["created"],
                "document": job["document"],
                "executions": [
                    {
                        "thing": e["thing"],
                        "status": e["status"],
                        "executionNumber": e["execution_number"],
                        "versionNumber": e["version"],
                        "updated": e["last_updated_at"],
                        "statusDetails": json.loads(e["status_details"]) if e["status_details"] else {},
                        "terminal": e["status"] in TERMINAL,
                    }
                    for e in executions
                ],
            }
        )
    return {"things": things, "jobs": jobs}


def _telemetry(row):
    if row is None:
        return None
    payload = bytes(row["payload"])
    try:
        values = json.loads(payload)
    except ValueError:
        values = {"raw": payload.decode(errors="replace")}
    return {"at": row["modified"], "values": values}


def events(engine, write, stopping, interval: float = 0.25, keepalive: float = 15.0) -> None:
    """Write Server-Sent Events (`write(bytes)`) until `stopping` is set or the reader goes away."""
    last, quiet_since = None, time.monotonic()
    while not stopping.is_set():
        text = json.dumps(snapshot(engine), separators=(",", ":"), sort_keys=True)
        try:
            if text != last:
                write(b"event: fleet\ndata: " + text.encode() + b"\n\n")
                last, quiet_since = text, time.monotonic()
            elif time.monotonic() - quiet_since > keepalive:
                write(b": keepalive\n\n")
                quiet_since = time.monotonic()
        except OSError:
            return  # the page was closed
        stopping.wait(interval)
