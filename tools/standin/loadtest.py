"""Load test: many simulated devices, each running several jobs to a terminal state.

    python -m tools.standin.loadtest --devices 500 --jobs 5

Every device is a paho client with its own EC certificate. It runs the classic device loop
(start-next -> IN_PROGRESS update -> SUCCEEDED update -> start-next ...), driven by its
callbacks, retrying RequestThrottled/InternalError. Prints the request->response latency
percentiles the devices saw and checks that every execution ended SUCCEEDED.
"""

import argparse
import itertools
import json
import multiprocessing
import resource
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from tools.standin import StandIn

_TOKENS = itertools.count(1)


@dataclass
class Result:
    devices: int
    jobs: int
    seconds: float
    requests: int
    latencies: list = field(repr=False)
    terminal: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] if ordered else float("nan")

    def summary(self) -> str:
        return (
            f"{self.devices} devices x {self.jobs} jobs: {sum(self.terminal.values())} executions terminal "
            f"{self.terminal} in {self.seconds:.1f}s; {self.requests} requests, "
            f"latency p50 {self.percentile(50) * 1000:.1f} ms, p99 {self.percentile(99) * 1000:.1f} ms, "
            f"max {max(self.latencies, default=0) * 1000:.1f} ms; rejections {self.errors or 'none'}"
        )


class SimDevice:
    """One device's job loop, entirely in paho callbacks (no thread of its own but paho's)."""

    def __init__(self, name, port, ca, cert, key, expected: int, latencies: list, lock: threading.Lock):
        self.name, self.expected, self.done_jobs = name, expected, 0
        self.prefix = f"$aws/things/{name}/jobs/"
        self.latencies, self.lock = latencies, lock
        self.sent: dict = {}
        self.busy = False
        self._busy_lock = threading.Lock()
        self.errors: dict = {}
        self.finished = threading.Event()
        self.ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311)
        self.client.tls_set(
            ca_certs=str(ca),
            certfile=str(cert),
            keyfile=str(key),
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_message = self._on_message
        self.port = port

    def start(self) -> None:
        self.client.connect_async("localhost", self.port, keepalive=120)
        self.client.loop_start()

    def go(self) -> None:
        self._claim()

    def _claim(self) -> None:
        """One start-next at a time: go() and a notify-next may race."""
        with self._busy_lock:
            if self.busy:
                return
            self.busy = True
        self._send("start-next", {})

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        # as the firmware does: small requests go out at once, not after a delayed ACK (Nagle)
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe(
            [
                (self.prefix + "start-next/+", 1),
                (self.prefix + "+/update/+", 1),
                (self.prefix + "notify-next", 1),
            ]
        )

    def _send(self, suffix: str, payload: dict) -> None:
        token = f"{self.name}-{next(_TOKENS)}"
        payload["clientToken"] = token
        self.sent[token] = (time.monotonic(), suffix, dict(payload))
        self.client.publish(self.prefix + suffix, json.dumps(payload), qos=1)

    def _on_message(self, client, userdata, message) -> None:
        now = time.monotonic()
        payload = json.loads(message.payload)
        topic = message.topic[len(self.prefix) :]
        if topic == "notify-next":
            if "execution" in payload:
                self._claim()
            return
        sent = self.sent.pop(payload.get("clientToken"), None)
        if sent is None:
            return  # a duplicate or someone else's
        began, suffix, request = sent
        with self.lock:
            self.latencies.append(now - began)
        if topic.endswith("/rejected"):
            code = payload.get("code")
            self.errors[code] = self.errors.get(code, 0) + 1
            if code in ("RequestThrottled", "InternalError"):
                request.pop("clientToken")
                threading.Timer(0.05, self._send, (suffix, request)).start()
            return
        if topic == "start-next/accepted":
            execution = payload.get("execution")
            if execution is None:
                with self._busy_lock:
                    self.busy = False
                if self.done_jobs >= self.expected:
                    self.finished.set()
                return
            self._send(
                f"{execution['jobId']}/update", {"status": "IN_PROGRESS", "statusDetails": {"step": "run"}}
            )
        elif topic.endswith("/update/accepted"):
            job_id = topic.split("/")[0]
            if request["status"] == "IN_PROGRESS":
                self._send(f"{job_id}/update", {"status": "SUCCEEDED", "statusDetails": {"result": "ok"}})
            else:
                self.done_jobs += 1
                self._send("start-next", {})

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


PER_PROCESS = 150  # paho's select() loop cannot use descriptors >= 1024 (3 per client)


def _worker(port, ca, devices, jobs, ready, go, results, timeout) -> None:
    """One process running a slice of the devices; reports (latencies, errors, done, failure)."""
    latencies: list = []
    lock = threading.Lock()
    sims = [SimDevice(name, port, ca, cert, key, jobs, latencies, lock) for name, cert, key in devices]
    failure = None
    try:
        for batch in range(0, len(sims), 25):  # a gentle ramp: mosquitto's listen backlog is finite
            for sim in sims[batch : batch + 25]:
                sim.start()
            for sim in sims[batch : batch + 25]:
                if not sim.ready.wait(60):
                    raise TimeoutError(f"{sim.name} did not connect and subscribe")
        ready.put(len(sims))
        go.wait()
        for sim in sims:
            sim.go()
        deadline = time.monotonic() + timeout
        for sim in sims:
            if not sim.finished.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"{sim.name} finished {sim.done_jobs}/{jobs} jobs before the deadline")
    except TimeoutError as err:
        failure = str(err)
        ready.put(0)
    finally:
        for sim in sims:
            sim.stop()
    errors: dict = {}
    for sim in sims:
        for code, n in sim.errors.items():
            errors[code] = errors.get(code, 0) + n
    results.put((latencies, errors, failure))


def run(
    aws: StandIn, devices: int = 50, jobs: int = 5, timeout: float = 600.0, prefix: str = "load"
) -> Result:
    """Connect `devices` devices, create `jobs` jobs targeting all of them, wait until all ran.

    The devices run in worker processes of at most PER_PROCESS devices each.
    """
    names = [f"{prefix}-{i:04d}" for i in range(devices)]
    identities = []
    for name in names:
        ident = aws.thing(name, "ec")
        identities.append((name, str(ident.cert_pem), str(ident.key_pem)))
    context = multiprocessing.get_context("spawn")
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    slices = [identities[i : i + PER_PROCESS] for i in range(0, devices, PER_PROCESS)]
    workers = [
        context.Process(
            target=_worker,
            args=(aws.port, str(aws.ca.cert_pem), part, jobs, ready, go, results, timeout),
            daemon=True,
        )
        for part in slices
    ]
    for worker in workers:
        worker.start()
    try:
        connected = sum(ready.get(timeout=120 + len(part) * 0.5) for part in slices)
        if connected != devices:
            raise RuntimeError(f"only {connected} of {devices} devices connected")
        job_ids = [f"{prefix}-job-{j}" for j in range(jobs)]
        began = time.monotonic()
        for job_id in job_ids:
            aws.create_job(job_id, {"operation": "noop", "job": job_id}, names)
        go.set()
        latencies: list = []
        errors: dict = {}
        failures = []
        for _ in workers:
            part_latencies, part_errors, failure = results.get(timeout=timeout + 60)
            latencies += part_latencies
            for code, n in part_errors.items():
                errors[code] = errors.get(code, 0) + n
            if failure:
                failures.append(failure)
        seconds = time.monotonic() - began
    finally:
        go.set()
        for worker in workers:
            worker.join(30)
            if worker.is_alive():
                worker.kill()
    if failures:
        raise TimeoutError("; ".join(failures))
    terminal: dict = {}
    for job_id in job_ids:
        for summary in aws.engine.list_executions_for_job(job_id)["executionSummaries"]:
            status = summary["jobExecutionSummary"]["status"]
            terminal[status] = terminal.get(status, 0) + 1
    return Result(devices, jobs, seconds, len(latencies), latencies, terminal, errors)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.standin.loadtest", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=5, help="jobs per device")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--state", help="state folder to keep (logs, database); default: a temporary one")
    parser.add_argument(
        "--throttle-every", type=int, default=0, help="inject RequestThrottled every Nth request"
    )
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = args.devices * 2 + 200
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed), hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    print(f"open-file limit {soft} (needs about {needed})", flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="standin-load-") as scratch,
        StandIn(args.state or scratch) as aws,
    ):
        if args.throttle_every:
            aws.set_faults(throttle_every=args.throttle_every)
        result = run(aws, args.devices, args.jobs, args.timeout)
    print(result.summary())
    expected = args.devices * args.jobs
    ok = result.terminal.get("SUCCEEDED", 0) == expected and sum(result.terminal.values()) == expected
    if not ok:
        print(f"FAILED: expected {expected} SUCCEEDED executions", file=sys.stderr)
    print(f"median {statistics.median(result.latencies) * 1000:.1f} ms over {result.requests} requests")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
