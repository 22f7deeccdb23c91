"""The peer: a Jobs device built on the AWS IoT Device SDK v2 for Python (awsiotsdk), run as a process.

    python -m bench.peer --port P --thing T --ca CA --cert C --key K --expect N --gpio FILE

The classic loop of AWS's own jobs sample: subscribe start-next accepted/rejected, notify-next,
update accepted/rejected (job id `+`); publish start-next; on an execution, "run" it (write the
value to the gpio file), update SUCCEEDED; on update accepted, start-next again. When start-next
answers with no execution after `--expect` jobs, print one JSON line (jobs, peak RSS) and exit.
"""

import argparse
import json
import resource
import sys
import threading

from awscrt import mqtt
from awsiot import iotjobs, mqtt_connection_builder


class PeerDevice:
    def __init__(self, args):
        self.args = args
        self.thing = args.thing
        self.lock = threading.Lock()
        self.working = False
        self.done = 0
        self.finished = threading.Event()
        self.error = None
        self.connection = mqtt_connection_builder.mtls_from_path(
            endpoint="localhost",
            port=args.port,
            cert_filepath=args.cert,
            pri_key_filepath=args.key,
            ca_filepath=args.ca,
            client_id=args.thing,
            clean_session=True,
            keep_alive_secs=60,
        )
        self.jobs = iotjobs.IotJobsClient(self.connection)

    def subscribe(self):
        qos = mqtt.QoS.AT_LEAST_ONCE
        thing = {"thing_name": self.thing}
        any_job = {"thing_name": self.thing, "job_id": "+"}
        for method, request, callback in (
            (
                self.jobs.subscribe_to_next_job_execution_changed_events,
                iotjobs.NextJobExecutionChangedSubscriptionRequest(**thing),
                self.on_next_changed,
            ),
            (
                self.jobs.subscribe_to_start_next_pending_job_execution_accepted,
                iotjobs.StartNextPendingJobExecutionSubscriptionRequest(**thing),
                self.on_start_next_accepted,
            ),
            (
                self.jobs.subscribe_to_start_next_pending_job_execution_rejected,
                iotjobs.StartNextPendingJobExecutionSubscriptionRequest(**thing),
                self.on_rejected,
            ),
            (
                self.jobs.subscribe_to_update_job_execution_accepted,
                iotjobs.UpdateJobExecutionSubscriptionRequest(**any_job),
                self.on_update_accepted,
            ),
            (
                self.jobs.subscribe_to_update_job_execution_rejected,
                iotjobs.UpdateJobExecutionSubscriptionRequest(**any_job),
                self.on_rejected,
            ),
        ):
            future, _ = method(request=request, qos=qos, callback=callback)
            future.result(10)

    def try_start_next(self):
        with self.lock:
            if self.working:
                return
            self.working = True
        request = iotjobs.StartNextPendingJobExecutionRequest(thing_name=self.thing)
        self.jobs.publish_start_next_pending_job_execution(request, mqtt.QoS.AT_LEAST_ONCE)

    def done_working(self):
        with self.lock:
            self.working = False
        self.try_start_next()

    def on_next_changed(self, event):
        if event.execution is not None:
            self.try_start_next()

    def on_start_next_accepted(self, response):
        execution = response.execution
        if execution is None:
            with self.lock:
                self.working = False
            if self.done >= self.args.expect:
                self.finished.set()
            return
        try:
            document = execution.job_document or {}
            with open(self.args.gpio, "w") as pin:  # the "run": drive the pin (a file here)
                pin.write(str(document.get("value", 0)))
            details = {"pin": str(document.get("pin")), "value": str(document.get("value"))}
            status = iotjobs.JobStatus.SUCCEEDED
        except Exception as err:  # noqa: BLE001 - a job that fails is reported, not fatal
            details, status = {"reason": repr(err)}, iotjobs.JobStatus.FAILED
        request = iotjobs.UpdateJobExecutionRequest(
            thing_name=self.thing,
            job_id=execution.job_id,
            status=status,
            status_details=details,
            expected_version=execution.version_number,
        )
        self.jobs.publish_update_job_execution(request, mqtt.QoS.AT_LEAST_ONCE)

    def on_update_accepted(self, response):
        self.done += 1
        self.done_working()

    def on_rejected(self, error):
        self.error = f"{error.code}: {error.message}"
        self.finished.set()

    def run(self, timeout: float) -> dict:
        self.connection.connect().result(15)
        try:
            self.subscribe()
            before = resource.getrusage(resource.RUSAGE_SELF)
            self.try_start_next()
            if not self.finished.wait(timeout):
                self.error = f"{self.done}/{self.args.expect} jobs in {timeout:.0f}s"
        finally:
            self.connection.disconnect().result(10)
        after = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "jobs": self.done,
            "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
            "error": self.error,
            "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer", description=__doc__.split("\n")[0])
    for name in ("--thing", "--ca", "--cert", "--key", "--gpio"):
        parser.add_argument(name, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args(argv)
    result = PeerDevice(args).run(args.timeout)
    print(json.dumps(result), flush=True)
    return 0 if result["error"] is None else 1


if __name__ == "__main__":
    sys.exit(main())


def run_once(aws, thing: str, folder, tag: str, count: int, timeout: float) -> dict:
    """Host side: queue the jobs, run the SDK device process, span (s) and its peak RSS (KiB)."""
    import os
    import subprocess
    import time
    from pathlib import Path

    from bench.common import ROOT, BenchError, check_service, job_span, stop_process, wait_all_terminal
    from bench.device import gpio_jobs

    ident = aws.thing(thing, "ec")
    job_ids = gpio_jobs(aws, thing, tag, count)
    command = [
        sys.executable,
        "-m",
        "bench.peer",
        "--thing",
        thing,
        "--port",
        str(aws.port),
        "--ca",
        str(aws.ca.cert_pem),
        "--cert",
        str(ident.cert_pem),
        "--key",
        str(ident.key_pem),
        "--gpio",
        str(Path(folder) / "gpio-led"),
        "--expect",
        str(count),
        "--timeout",
        str(timeout),
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + timeout + 30
        while True:
            try:
                out, _ = proc.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                check_service(aws)
                if time.monotonic() > deadline:
                    raise BenchError(f"SDK device: no result within {timeout + 30:.0f}s") from None
    finally:
        stop_process(proc)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise BenchError(f"SDK device failed (exit {proc.returncode}):\n{out[-1500:]}")
    result = json.loads(lines[-1])
    counts = wait_all_terminal(aws, job_ids, thing, 10)
    if counts.get("SUCCEEDED") != count:
        raise BenchError(f"SDK device: {counts} (expected {count} SUCCEEDED)")
    return {"span": job_span(aws, job_ids, thing), "rss_kib": result["maxrss_kib"], "cpu": result["cpu"]}
