"""The floor: what any device must pay per job on this machine, measured in the same run.

* broker round trip: a paho client (mutual TLS, QoS 1) publishes, an echo client with the Jobs
  service's identity (paho, as the service is) receives and republishes, the first receives.
  A service round trip has exactly this path plus the service's own processing.
* service processing: the stand-in's Jobs engine answering start-next and update in-process
  (SQLite transaction + JSON), timed per job.
* minimal device: a paho client doing nothing but start-next -> update SUCCEEDED -> start-next,
  the measured floor of a real job loop (the device side costs only paho's callbacks).
"""

import cProfile
import io
import json
import pstats
import queue
import socket
import ssl
import statistics
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from bench.common import BenchError, check_service, job_span, wait_all_terminal
from tools import certs
from tools.broker import SERVICE_IDENTITY

# about the size of a start-next request / update answer on the wire
_PAYLOAD = json.dumps({"clientToken": "1a2b3c4d-17", "statusDetails": {"pin": "LED", "value": "1"}}).encode()


def _client(client_id: str, ca: Path, cert: Path, key: Path) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    client.tls_set(
        ca_certs=str(ca), certfile=str(cert), keyfile=str(key), tls_version=ssl.PROTOCOL_TLS_CLIENT
    )
    return client


def _connect(client: mqtt.Client, port: int, topics, nodelay: bool, timeout: float = 15.0) -> None:
    """Connect and subscribe; `nodelay`: TCP_NODELAY as our device sets it (paho does not)."""
    ready = threading.Event()

    def on_connect(c, userdata, flags, reason, properties):
        if nodelay:
            c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.subscribe([(t, 1) for t in topics])

    client.on_connect = on_connect
    client.on_subscribe = lambda *a: ready.set()
    client.connect("localhost", port, keepalive=60)
    client.loop_start()
    if not ready.wait(timeout):
        client.loop_stop()
        raise BenchError(f"{client._client_id!r}: no connection/subscription to the broker in {timeout}s")


def broker_rtt(aws, thing: str, samples: int = 200, echo_nodelay: bool = False) -> list:
    """Round-trip times (s): device -> broker -> echo (service identity) -> broker -> device.

    The device side sets TCP_NODELAY (as ours does); the echo side is configured as the stand-in's
    Jobs service is (paho defaults: Nagle on) unless `echo_nodelay`.
    """
    ident = aws.thing(thing, "ec")
    base = f"$aws/things/{thing}/jobs/bench-echo/"
    request, reply = base + "request/accepted", base + "reply/accepted"  # the service ignores */accepted
    pki = aws.broker.folder / "pki"
    service = certs.load(pki, SERVICE_IDENTITY)
    echo = _client("bench-echo", aws.ca.cert_pem, service.cert_pem, service.key_pem)
    echo.on_message = lambda c, u, m: c.publish(reply, m.payload, qos=1)
    device = _client(thing, aws.ca.cert_pem, ident.cert_pem, ident.key_pem)
    answers: queue.Queue = queue.Queue()
    device.on_message = lambda c, u, m: answers.put(time.perf_counter())
    times = []
    try:
        _connect(echo, aws.port, [request], echo_nodelay)
        _connect(device, aws.port, [reply], True)
        for i in range(samples + 10):
            began = time.perf_counter()
            device.publish(request, _PAYLOAD, qos=1)
            try:
                arrived = answers.get(timeout=5)
            except queue.Empty:
                raise BenchError("broker round trip: no echo within 5 s") from None
            if i >= 10:  # the first few warm up TLS session state and the broker's routing
                times.append(arrived - began)
    finally:
        for client in (device, echo):
            client.disconnect()
            client.loop_stop()
    return times


def service_processing(jobs: int = 200, profile: bool = False) -> tuple:
    """Per-job seconds the stand-in's engine spends answering start-next + update (in-process).

    Returns (list of per-job seconds, profile text or "").
    """
    from tools.standin.engine import Engine
    from tools.standin.store import Store

    with tempfile.TemporaryDirectory(prefix="bench-service-") as folder:
        store = Store(Path(folder) / "state.sqlite")
        engine = Engine(store)
        thing = "bench-svc"
        engine.create_thing(thing)
        arn = engine.arn("thing", thing)
        for i in range(jobs):
            doc = json.dumps({"operation": "gpio.write", "pin": "LED", "value": i % 2})
            engine.create_job(f"svc-{i}", {"targets": [arn], "document": doc})
        engine.ack_outbox([row[0] for row in engine.outbox_after(0, limit=100000)])
        prefix = f"$aws/things/{thing}/jobs/"
        profiler = cProfile.Profile() if profile else None
        per_job = []
        for i in range(jobs):
            began = time.perf_counter()
            if profiler:
                profiler.enable()
            out = engine.handle(prefix + "start-next", json.dumps({"clientToken": f"t-{i}a"}).encode())
            for _, body in out:
                json.dumps(body, separators=(",", ":"))
            execution = out[0][1]["execution"]
            update = {
                "status": "SUCCEEDED",
                "statusDetails": {"pin": "LED", "value": "1"},
                "expectedVersion": execution["versionNumber"],
                "clientToken": f"t-{i}b",
            }
            out = engine.handle(prefix + execution["jobId"] + "/update", json.dumps(update).encode())
            for _, body in out:
                json.dumps(body, separators=(",", ":"))
            if profiler:
                profiler.disable()
            per_job.append(time.perf_counter() - began)
            if not out[0][0].endswith("/accepted"):
                raise BenchError(f"service processing: update rejected: {out[0][1]}")
        store.close()
    text = ""
    if profiler:
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(12)
        text = stream.getvalue()
    return per_job, text


class MinimalDevice:
    """start-next -> update SUCCEEDED -> start-next ... in paho callbacks (TCP_NODELAY); nothing else."""

    def __init__(self, aws, thing: str):
        ident = aws.thing(thing, "ec")
        self.prefix = f"$aws/things/{thing}/jobs/"
        self.client = _client(thing, aws.ca.cert_pem, ident.cert_pem, ident.key_pem)
        self.client.on_message = self._on_message
        self.port = aws.port
        self.count = 0
        self.idle = threading.Event()
        self.error = None

    def _on_message(self, client, userdata, message) -> None:
        body = json.loads(message.payload)
        topic = message.topic[len(self.prefix) :]
        if topic == "start-next/accepted":
            execution = body.get("execution")
            if execution is None:
                self.idle.set()
                return
            update = {
                "status": "SUCCEEDED",
                "statusDetails": {"pin": "LED", "value": "1"},
                "expectedVersion": execution["versionNumber"],
                "clientToken": "m",
            }
            client.publish(self.prefix + execution["jobId"] + "/update", json.dumps(update), qos=1)
        elif topic.endswith("/update/accepted"):
            self.count += 1
            client.publish(self.prefix + "start-next", json.dumps({"clientToken": "m"}), qos=1)
        elif topic.endswith("/rejected"):
            state = body.get("executionState") or {}
            if body.get("code") == "VersionMismatch" and state.get("status") == "SUCCEEDED":
                return  # an answer to a duplicate of our own update: already done
            self.error = f"{topic}: {body}"
            self.idle.set()

    def run(self, aws, job_ids, thing: str, timeout: float) -> float:
        self.idle.clear()
        _connect(self.client, self.port, [self.prefix + "start-next/+", self.prefix + "+/update/+"], True)
        try:
            self.client.publish(self.prefix + "start-next", json.dumps({"clientToken": "m"}), qos=1)
            deadline = time.monotonic() + timeout
            while not self.idle.wait(0.5):
                check_service(aws)
                if time.monotonic() > deadline:
                    break
            if not self.idle.is_set():
                raise BenchError(f"minimal device: {self.count}/{len(job_ids)} jobs in {timeout:.0f}s")
            if self.error:
                raise BenchError(f"minimal device: {self.error}")
        finally:
            self.client.disconnect()
            self.client.loop_stop()
        counts = wait_all_terminal(aws, job_ids, thing, 10)
        if counts.get("SUCCEEDED") != len(job_ids):
            raise BenchError(f"minimal device: {counts}")
        return job_span(aws, job_ids, thing)


def median_ms(values) -> float:
    return statistics.median(values) * 1000
