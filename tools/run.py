"""`make run`: the local AWS IoT stand-in, a simulated ESP32, and a demonstration set of jobs.

Brings up mosquitto (mutual TLS), the Jobs service, the HTTPS file server and the control plane;
provisions a thing; boots the simulated device (firmware/main.py under the MicroPython Unix port
with the unix board); queues the demonstration jobs through the control plane; shows a live table
until every job is terminal; checks each against the state it should reach; stops everything.
With --keep the stand-in and the device stay up for your own jobs until Ctrl-C.
"""

import argparse
import hashlib
import queue
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tools import stopped_by
from tools.provision import CODESIGN_FILE, codesign_point
from tools.simdevice import SimDevice, app_image, provision
from tools.standin import StandIn
from tools.standin.device import Device

ROOT = Path(__file__).resolve().parent.parent
THING = "demo-esp32"
TERMINAL = {"SUCCEEDED", "FAILED", "REJECTED", "CANCELED", "TIMED_OUT", "REMOVED"}
APP_VERSION = "demo-app-2"
APP_SOURCE = (
    b'"""The demo application: its version is what telemetry reports after ota.files."""\nVERSION = "2"\n'
)
FIRMWARE_VERSION = "2.0.0"  # of the image the AWS IoT OTA update installs
FIRMWARE_KEY = "firmware/demo-fw-2.0.0.bin"
OTA_UPDATE = {  # CreateOTAUpdate as a user sends it to AWS (boto3), over MQTT, locally signed
    "targets": [],  # filled with the thing's ARN
    "protocols": ["MQTT"],
    "roleArn": "arn:aws:iam::123456789012:role/demo-ota",
    "files": [
        {
            "fileName": "demo-fw.bin",
            "fileType": 0,
            "fileLocation": {"s3Location": {"bucket": "demo-bucket", "key": FIRMWARE_KEY}},
            "codeSigning": {"startSigningJobParameter": {"signingProfileName": "standin-local"}},
        }
    ],
}


@dataclass
class DemoJob:
    job_id: str
    what: str
    expect: str
    document: dict | None
    options: dict
    ota_update: dict | None = None  # created with CreateOTAUpdate (the job is AFR_OTA-<id>)


def demo_jobs() -> list[DemoJob]:
    app_sha = hashlib.sha256(APP_SOURCE).hexdigest()
    app_url = "${aws:iot:s3-presigned-url:https://s3.amazonaws.com/demo-bucket/app/app.py}"
    return [
        DemoJob(
            "led-on",
            "gpio.write LED on",
            "SUCCEEDED",
            {"operation": "gpio.write", "pin": "LED", "value": 1},
            {},
        ),
        DemoJob(
            "relay-pulse",
            "gpio.pulse RELAY1 300 ms",
            "SUCCEEDED",
            {"operation": "gpio.pulse", "pin": "RELAY1", "value": 1, "ms": 300},
            {},
        ),
        DemoJob("reboot", "system.reboot", "SUCCEEDED", {"operation": "system.reboot"}, {}),
        DemoJob(
            "app-update",
            "ota.files: the device's application",
            "SUCCEEDED",
            {
                "operation": "ota.files",
                "version": APP_VERSION,
                "files": [{"path": "app.py", "url": app_url, "sha256": app_sha, "size": len(APP_SOURCE)}],
            },
            {"presigned_expires": 600},
        ),
        DemoJob("aws-reboot", "AWS-Reboot managed template", "SUCCEEDED", None, {"template": "AWS-Reboot"}),
        DemoJob(
            "custom-job",
            "customJob (a user handler)",
            "SUCCEEDED",
            {"operation": "customJob", "otherInfo": "someValue"},
            {},
        ),
        DemoJob(
            "AFR_OTA-demo-fw",
            "CreateOTAUpdate: firmware over MQTT",
            "SUCCEEDED",
            None,
            {},
            ota_update=OTA_UPDATE,
        ),
        DemoJob("unknown-op", "unknown operation", "REJECTED", {"operation": "selfDestruct"}, {}),
        DemoJob(
            "bad-pin",
            "gpio.write on flash pin 6",
            "REJECTED",
            {"operation": "gpio.write", "pin": 6, "value": 1},
            {},
        ),
    ]


class TelemetryWatch:
    """The device's telemetry (logi2/device/<thing>), read with the service identity."""

    def __init__(self, aws: StandIn, thing: str):
        pki = aws.broker.folder / "pki"
        self.latest: dict = {}
        self._device = Device(
            "demo-telemetry-watch",
            aws.port,
            aws.ca.cert_pem,
            pki / "jobs-service.cert.pem",
            pki / "jobs-service.key.pem",
            subscribe=[f"logi2/device/{thing}"],
        )
        self._stop = threading.Event()

    def start(self) -> "TelemetryWatch":
        self._device.start()
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                _topic, payload = self._device.messages.get(timeout=0.2)
            except queue.Empty:
                continue
            if isinstance(payload, dict):
                self.latest = payload

    def stop(self) -> None:
        self._stop.set()
        self._device.client.loop_stop()
        self._device.client.disconnect()


def details_text(execution: dict) -> str:
    details = (execution.get("statusDetails") or {}).get("detailsMap") or {}
    return ", ".join(f"{k}={v}" for k, v in details.items())


def render(jobs: list[DemoJob], rows: dict, started: float, telemetry: dict) -> str:
    lines = [f"{'job':<16} {'what':<36} {'status':<11} {'elapsed':>7}  statusDetails", "-" * 114]
    for job in jobs:
        execution = rows.get(job.job_id, {})
        status = execution.get("status", "-")
        finished = execution.get("lastUpdatedAt") if status in TERMINAL else None
        elapsed = (finished or time.time()) - started
        lines.append(
            f"{job.job_id:<16} {job.what:<36} {status:<11} {elapsed:>6.1f}s  {details_text(execution)[:60]}"
        )
    if telemetry:
        lines.append("")
        lines.append(
            "device telemetry: app {app}, firmware {fw}, uptime {uptime}s, free heap {heap_free} B, "
            "jobs ok {jobs_ok}, failed {jobs_failed}, reconnects {reconnects}".format(**telemetry)
        )
    return "\n".join(lines)


def start_stack(state: Path, interval_s: int) -> tuple[StandIn, SimDevice]:
    shutil.rmtree(state, ignore_errors=True)
    aws = StandIn(state / "aws")
    aws.start()
    identity = aws.thing(THING, "rsa")
    device_root = state / "device"
    config = {
        "thing_name": THING,
        "endpoint": "localhost",
        "port": aws.port,
        "telemetry_interval_s": interval_s,
    }
    # the code-signing key the AWS IoT OTA update is checked with: the local profile's, as
    # `make provision CODESIGN_CERT=...` writes it
    config["codesign_key"] = CODESIGN_FILE
    provision(device_root, config, aws.ca.cert_der, identity.cert_der, identity.key_der)
    point, problem = codesign_point(aws.engine.signer().cert_pem)
    if problem:
        raise RuntimeError(problem)
    (device_root / CODESIGN_FILE).write_bytes(point)
    (aws.files / FIRMWARE_KEY).parent.mkdir(parents=True, exist_ok=True)
    (aws.files / FIRMWARE_KEY).write_bytes(app_image(200 * 1024, FIRMWARE_VERSION))
    # the user's custom operations: the documented example, as a user would install it
    shutil.copyfile(ROOT / "lib" / "jobs" / "ops" / "custom_example.py", device_root / "handlers.py")
    (aws.files / "app").mkdir(parents=True, exist_ok=True)
    (aws.files / "app" / "app.py").write_bytes(APP_SOURCE)
    return aws, SimDevice(device_root).start()


def run_demo(aws: StandIn, device: SimDevice, timeout: float, live: bool) -> int:
    jobs = demo_jobs()
    telemetry = TelemetryWatch(aws, THING).start()
    started = time.time()
    try:
        for job in jobs:
            if job.ota_update is not None:
                create_ota_update(aws, job)
            else:
                aws.create_job(job.job_id, job.document, [THING], **job.options)
        rows: dict = {}
        shown = {}
        while True:
            for job in jobs:
                rows[job.job_id] = aws.describe_execution(job.job_id, THING)
            done = all(rows[j.job_id].get("status") in TERMINAL for j in jobs)
            latest = telemetry.latest
            app_seen = latest.get("app") == APP_VERSION
            # the counters survive the demo's resets: wait for the message that counts every job
            app_seen = app_seen and latest.get("jobs_ok", 0) + latest.get("jobs_failed", 0) >= len(jobs)
            if live:
                sys.stdout.write("\x1b[H\x1b[2J" + render(jobs, rows, started, telemetry.latest) + "\n")
                sys.stdout.flush()
            else:
                for job in jobs:
                    status = rows[job.job_id].get("status")
                    if shown.get(job.job_id) != status:
                        shown[job.job_id] = status
                        details = details_text(rows[job.job_id])
                        print(f"{time.time() - started:6.1f}s  {job.job_id:<12} {status}  {details}")
            if (done and app_seen) or time.time() - started > timeout:
                break
            time.sleep(0.3)
        if not live:  # on a terminal the last frame of the live table is already on screen
            print()
            print(render(jobs, rows, started, telemetry.latest))
    finally:
        telemetry.stop()
    return summarize(jobs, rows, telemetry.latest, time.time() - started)


def create_ota_update(aws: StandIn, job: DemoJob) -> None:
    """CreateOTAUpdate with boto3 against the stand-in's control plane, as against AWS IoT."""
    import boto3

    iot = boto3.client(
        "iot",
        endpoint_url=aws.control_url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    request = dict(job.ota_update or {}, targets=[aws.arn("thing", THING)])
    made = iot.create_ota_update(otaUpdateId=job.job_id.removeprefix("AFR_OTA-"), **request)
    if made["awsIotJobId"] != job.job_id:
        raise RuntimeError(f"CreateOTAUpdate made job {made['awsIotJobId']}, not {job.job_id}")


def summarize(jobs: list[DemoJob], rows: dict, telemetry: dict, seconds: float) -> int:
    wrong = [j for j in jobs if rows.get(j.job_id, {}).get("status") != j.expect]
    print()
    for job in jobs:
        status = rows.get(job.job_id, {}).get("status", "(none)")
        mark = "ok " if status == job.expect else "BAD"
        print(f"  {mark} {job.job_id:<16} {status:<10} (expected {job.expect})")
    app = telemetry.get("app")
    if app == APP_VERSION:
        print(f"  ok  telemetry reports application version {app} after the ota.files update")
    else:
        print(f"  BAD telemetry reports application version {app!r}, expected {APP_VERSION}")
    print()
    if wrong or app != APP_VERSION:
        print(f"make run: {len(wrong)} job(s) did not reach their expected state in {seconds:.1f}s")
        return 1
    print(f"make run: all {len(jobs)} demonstration jobs reached their expected state in {seconds:.1f}s")
    return 0


def keep_up(aws: StandIn, state: Path) -> None:
    arn = aws.arn("thing", THING)
    print(
        f"""
The stand-in and the simulated device stay up. Send your own jobs (Ctrl-C stops everything):

  fleet page (devices, jobs, executions, live; create and cancel jobs): {aws.control.fleet_url}

  .venv/bin/python -m tools.standin create-job my-job-1 --state {state / "aws"} --thing {THING} \\
      --document '{{"operation": "gpio.write", "pin": "LED", "value": 0}}'
  .venv/bin/python -m tools.standin watch --state {state / "aws"}

  AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local .venv/bin/aws iot create-job \\
      --endpoint-url {aws.control_url} --region us-east-1 \\
      --job-id my-job-2 --targets {arn} \\
      --document '{{"operation": "diag.echo", "message": "hello"}}'

Device log: {state / "device" / "device.log"}"""
    )
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the stand-in and device up after the demo")
    parser.add_argument(
        "--state", type=Path, default=ROOT / "build" / "run", help="state folder (wiped first)"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for the demo jobs to finish")
    args = parser.parse_args(argv)
    live = sys.stdout.isatty()
    # a polite kill stops what we started, as Ctrl-C does
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    aws = device = None
    try:
        aws, device = start_stack(args.state, interval_s=1)
        print(
            f"stand-in up: MQTT localhost:{aws.port}, control plane {aws.control_url}; device {THING} booting"
        )
        result = run_demo(aws, device, args.timeout, live)
        if args.keep:
            keep_up(aws, args.state)
        return result
    except KeyboardInterrupt:
        return 130
    except (
        OSError,
        RuntimeError,
    ) as error:  # a state folder that cannot be made, a broker that will not start
        print(f"make run: {stopped_by(error, args.state)}", file=sys.stderr)
        return 1
    finally:
        if device:
            device.stop()
        if aws:
            aws.stop()


if __name__ == "__main__":
    sys.exit(main())
