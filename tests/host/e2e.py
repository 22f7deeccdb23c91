"""Shared rig for the end-to-end tests (tests/host/test_e2e_*.py).

Real parts only: the local AWS IoT stand-in (mosquitto with mutual TLS, the Jobs service process,
the HTTPS file server, the control plane) and the firmware (firmware/main.py) running under the
MicroPython Unix port on the unix board, supervised by tools/simdevice.py (exit 75 = reset, the
process boots again; kill() = power cut).

    rig = Rig(tmp_folder).start()          # one stand-in per test module
    dev = rig.device("e2e-ops-1")          # registered thing, provisioned root, powered on
    dev.job("job-1", {"operation": "gpio.write", "pin": "LED", "value": 1})
    dev.result("job-1")                     # the execution once terminal
    dev.pins_log()                          # ["LED 4 0 1"]: what really moved
    dev = ota_device(rig, "e2e-ota-1")      # with the stand-in's code-signing key (afr_ota)
    job = create_update(rig, "u1", dev.name, [ota_file(put_file(rig, "fw/x.bin", image))])
"""

import json
import os
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import paho.mqtt.client as mqtt

from tools.broker import SERVICE_IDENTITY
from tools.provision import CODESIGN_FILE, codesign_point
from tools.simdevice import SimDevice, provision
from tools.standin import StandIn

ROOT = Path(__file__).resolve().parent.parent.parent
# the example custom handler (docs/operations.md), as a user copies it to <root>/handlers.py
ROOT_CUSTOM_EXAMPLE = ROOT / "lib" / "jobs" / "ops" / "custom_example.py"

# Short timeouts so that failures and recoveries happen in test time, not in field time.
FAST = {
    "telemetry_interval_s": 0,
    "keepalive": 30,
    "connect_timeout_ms": 2000,
    "request_timeout_ms": 2000,
    "reconnect_min_ms": 50,
    "reconnect_max_ms": 400,
    "retries": 4,
    "retry_base_ms": 50,
    "progress_interval_ms": 200,
    "https_timeout_ms": 2000,
}


ROLE = "arn:aws:iam::123456789012:role/ota"


def details(execution: dict) -> dict:
    """The statusDetails of an execution as the control plane describes it."""
    return execution.get("statusDetails", {}).get("detailsMap", {})


def wait_until(condition, timeout: float = 15.0, what: str = "condition", interval: float = 0.01):
    """The first truthy value of condition() within timeout; AssertionError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Device:
    """One simulated device: its filesystem folder, its runner and what the test reads from it."""

    def __init__(self, rig: "Rig", name: str, root: Path, heapsize: str | None = None):
        self.rig = rig
        self.aws = rig.aws
        self.name = name
        self.root = root
        self.sim = SimDevice(root, heapsize=heapsize)

    # -- power ----------------------------------------------------------------------------
    def start(self) -> "Device":
        self.sim.start()
        return self

    def kill(self) -> None:
        """Power cut (SIGKILL); no boot follows until start()."""
        self.sim.kill()

    def stop(self) -> None:
        self.sim.stop()

    # -- jobs -------------------------------------------------------------------------------
    def job(self, job_id: str, document, **options) -> dict:
        return self.aws.create_job(job_id, document, [self.name], **options)

    def result(self, job_id: str, timeout: float = 20.0) -> dict:
        """The terminal execution (TimeoutError with the device log's tail otherwise)."""
        try:
            return self.aws.wait_terminal(job_id, self.name, timeout=timeout)
        except TimeoutError as error:
            raise AssertionError(f"{error}\n--- device log ---\n{self.output()[-3000:]}") from None

    def execution(self, job_id: str) -> dict:
        return self.aws.describe_execution(job_id, self.name)

    def run(self, job_id: str, document, timeout: float = 20.0, **options) -> dict:
        self.job(job_id, document, **options)
        return self.result(job_id, timeout)

    def wait_status(self, job_id: str, status: str, timeout: float = 15.0) -> dict:
        return wait_until(
            lambda: (e := self.execution(job_id))["status"] == status and e,
            timeout,
            f"{job_id} on {self.name} to be {status}",
        )

    # -- what the device's files say ------------------------------------------------------------
    def output(self) -> str:
        return self.sim.output()

    def mark(self) -> int:
        """An offset into the log; wait_log(after=mark) sees only what comes later."""
        return len(self.output())

    def wait_log(self, text: str, after: int = 0, timeout: float = 15.0) -> None:
        wait_until(lambda: text in self.output()[after:], timeout, f"{text!r} in the log of {self.name}")

    def pins_log(self) -> list[str]:
        path = self.root / "simboard" / "pins.log"
        return path.read_text().splitlines() if path.exists() else []

    def set_input(self, number: int, level: int) -> None:
        """The level an input pin reads (before the device first touches its pins)."""
        path = self.root / "simboard" / "pins.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        levels = json.loads(path.read_text()) if path.exists() else {}
        levels[str(number)] = level
        path.write_text(json.dumps(levels))

    def journal(self) -> dict | None:
        try:
            return json.loads((self.root / "journal.json").read_text())
        except (OSError, ValueError):
            return None

    def wait_journal(self, condition, timeout: float = 15.0, what: str = "journal") -> dict:
        return wait_until(lambda: (j := self.journal()) is not None and condition(j) and j, timeout, what)

    def otadata(self) -> dict:
        return json.loads((self.root / "simboard" / "otadata.json").read_text())

    def config(self) -> dict:
        return json.loads((self.root / "config.json").read_text())

    def problems(self) -> list[str]:
        """Lines of the device log that no run should print: warnings, uncaught crashes."""
        bad = ("Warning:", "Traceback", "MemoryError")
        return [line for line in self.output().splitlines() if line.startswith(bad)]


class Rig:
    """One stand-in (shared by a test module) and the devices it serves."""

    def __init__(self, folder: Path, **settings):
        self.folder = Path(folder)
        self.aws = StandIn(self.folder / "aws", **settings)
        self.devices: list[Device] = []
        self._probe: Probe | None = None

    def start(self) -> "Rig":
        self.aws.start()
        return self

    def stop(self) -> None:
        self.stop_devices()
        if self._probe is not None:
            self._probe.stop()
        self.aws.stop()

    def stop_devices(self) -> None:
        """Switch off every device of the test that ends (their folders stay for a post-mortem)."""
        for device in self.devices:
            device.stop()
        self.devices.clear()

    def provision(
        self, name: str, kind: str = "ec", ident=None, heapsize: str | None = None, **config
    ) -> Device:
        """A device folder with config.json and its DER certificates; not powered on.
        `heapsize`: MicroPython's -X heapsize (e.g. "192K"; default: the Unix port's)."""
        ident = ident or self.aws.thing(name, kind)
        root = self.folder / "devices" / name
        settings = {"thing_name": name, "endpoint": "localhost", "port": self.aws.port, **FAST, **config}
        provision(root, settings, self.aws.ca.cert_der, ident.cert_der, ident.key_der)
        device = Device(self, name, root, heapsize)
        self.devices.append(device)
        return device

    def device(self, name: str, kind: str = "ec", heapsize: str | None = None, **config) -> Device:
        """A provisioned device, powered on and connected (its first start-next answered)."""
        device = self.provision(name, kind, heapsize=heapsize, **config)
        device.start()
        device.wait_log("engine: connected")
        return device

    def files(self, key: str, data: bytes) -> str:
        """Put `data` in the stand-in's S3 folder; the presigned-URL placeholder for it."""
        path = self.aws.files / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return "${aws:iot:s3-presigned-url:https://s3.us-east-1.amazonaws.com/e2e-bucket/" + key + "}"

    def sniffer(self, *filters: str) -> "Sniffer":
        return Sniffer(self.aws, filters).start()

    def faults(self, throttle_every: int = 0, internal_error_rate: float = 0.0,
               duplicate_responses: bool = False, response_delay: float = 0.0) -> None:  # fmt: skip
        """Set the stand-in's fault injection (none by default) and wait until the Jobs service
        acts on it (it re-reads settings every 0.2 s): probe requests for a thing nobody uses
        show the delay, the duplicates, the throttling or the injected errors (or their end)."""
        self.aws.set_faults(throttle_every, internal_error_rate, duplicate_responses, response_delay)
        if self._probe is None:
            self._probe = Probe(self.aws)
        probe = self._probe
        if response_delay > 0:
            wait_until(lambda: probe.ask(min(0.15, response_delay / 2)) is None, 5, "the response delay")
            return
        if duplicate_responses:
            wait_until(lambda: probe.ask(1.0, copies=2) is not None, 5, "duplicate responses")
        elif throttle_every:
            wait_until(lambda: probe.ask(1.0) == "RequestThrottled", 5, "throttling")
        elif internal_error_rate:
            wait_until(lambda: probe.ask(1.0) == "InternalError", 5, "injected InternalError")
        else:
            wait_until(lambda: probe.ask(0.5, copies=1, settle=0.05) == "accepted", 5, "faults cleared")


class Sniffer:
    """An MQTT client with the service's identity: sees (and may publish on) every thing's topics."""

    _ids = iter(range(1, 1_000_000))

    def __init__(self, aws: StandIn, filters):
        pki = aws.broker.folder / "pki"
        self.filters = list(filters)
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        # not the service's client id: that would disconnect the Jobs service
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"e2e-sniffer-{next(self._ids)}",
            protocol=mqtt.MQTTv311,
        )
        self.client.tls_set(
            ca_certs=str(pki / "ca.cert.pem"),
            certfile=str(pki / f"{SERVICE_IDENTITY}.cert.pem"),
            keyfile=str(pki / f"{SERVICE_IDENTITY}.key.pem"),
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self._ready.set()
        self.client.on_message = self._on_message
        self.port = aws.port

    def start(self) -> "Sniffer":
        self.client.connect_async("localhost", self.port, keepalive=30)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise AssertionError("the sniffer did not subscribe within 10 s")
        return self

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if not reason.is_failure and self.filters:
            client.subscribe([(f, 1) for f in self.filters])
        elif not self.filters:
            self._ready.set()

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def seen(self, suffix: str = "") -> list[tuple[str, bytes]]:
        with self._lock:
            return [(t, p) for t, p in self.messages if t.endswith(suffix)]

    def wait(self, suffix: str, count: int = 1, timeout: float = 15.0) -> list[tuple[str, bytes]]:
        return wait_until(lambda: len(m := self.seen(suffix)) >= count and m, timeout, f"{count} x {suffix}")

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(10)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class _HoldHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_HoldHTTPServer"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def do_GET(self):  # noqa: N802 - http.server's naming
        owner = self.server.owner
        name = self.path.split("?")[0].lstrip("/")
        data = owner.files.get(name)
        entry = {"path": name, "start": 0, "sent": 0}
        owner.requests.append(entry)
        if data is None:
            self.send_error(404)
            return
        ranged = self.headers.get("Range", "")
        start = int(ranged[6:].split("-")[0]) if ranged.startswith("bytes=") else 0
        entry["start"] = start
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Connection", "close")
        self.end_headers()
        pos = start
        held_here = owner.holds(name)
        try:
            while pos < len(data):
                hold = owner.hold_at if held_here else None
                if hold is not None and pos >= hold:
                    self.wfile.flush()
                    owner.holding.set()
                    owner.release_event.wait(30)
                    if owner.hold_at is not None:
                        return  # still held: give up on this connection
                end = min(pos + 4096, len(data))
                if hold is not None and pos < hold < end:
                    end = hold
                self.wfile.write(data[pos:end])
                entry["sent"] += end - pos
                pos = end
            self.wfile.flush()
        except (ConnectionError, ssl.SSLError, OSError):
            pass


class _HoldHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: "HoldServer"


class HoldServer:
    """An HTTPS file server (the stand-in's server certificate, so the device trusts it) that
    stops sending at byte `hold_at` until `let_go()`: a download paused mid-way, on demand.
    `requests` lists what was asked for: {"path", "start" (Range), "sent" (body bytes)}."""

    def __init__(self, aws: StandIn):
        self.files: dict[str, bytes] = {}
        self.requests: list[dict] = []
        self.hold_at: int | None = None
        self.hold_nth: int | None = None
        self.holding = threading.Event()
        self.release_event = threading.Event()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(aws.broker.server.cert_pem, aws.broker.server.key_pem)
        self._server = _HoldHTTPServer(("127.0.0.1", 0), _HoldHandler)
        self._server.owner = self
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"https://localhost:{self.port}/{name}"

    def hold(self, at: int, nth_file: int | None = None) -> None:
        """Stop at byte `at` of every file, or only of the nth distinct file asked for (1-based)."""
        self.hold_at = at
        self.hold_nth = nth_file
        self.holding.clear()
        self.release_event.clear()

    def holds(self, name: str) -> bool:
        if self.hold_nth is None:
            return True
        order = list(dict.fromkeys(r["path"] for r in self.requests))
        return name in order and order.index(name) == self.hold_nth - 1

    def let_go(self) -> None:
        self.hold_at = None
        self.release_event.set()

    def stop(self) -> None:
        self.let_go()
        self._server.shutdown()
        self._server.server_close()


class Probe(Sniffer):
    """GetPendingJobExecutions for a thing no device uses, to see how the service answers now."""

    THING = "e2e-probe"
    _tokens = iter(range(1, 1_000_000))

    def __init__(self, aws: StandIn):
        super().__init__(aws, [f"$aws/things/{self.THING}/jobs/get/+"])
        self.start()

    def answers(self, token: str) -> list[bytes]:
        needle = f'"clientToken":"{token}"'.encode()
        return [p for _, p in self.seen() if needle in p.replace(b" ", b"")]

    def ask(self, within: float, copies: int = 1, settle: float = 0.0) -> str | None:
        """ "accepted" or the rejected code of one request if `copies` answers came within
        `within` s (and no more within `settle` s after); None otherwise."""
        token = f"probe-{next(self._tokens)}"
        self.publish(f"$aws/things/{self.THING}/jobs/get", json.dumps({"clientToken": token}))
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and len(self.answers(token)) < copies:
            time.sleep(0.005)
        if settle:
            time.sleep(settle)
        got = self.answers(token)
        if len(got) != copies:
            return None
        answer = json.loads(got[0])
        return answer.get("code") or "accepted"


# -- AWS IoT OTA updates (CreateOTAUpdate) ------------------------------------------------


def ota_device(rig: Rig, name: str, codesign_cert: Path | None = None, **config):
    """A device provisioned with a code-signing certificate's key (default: the stand-in's local
    signing profile), powered on."""
    dev = rig.provision(name, codesign_key=CODESIGN_FILE, **config)
    point, problem = codesign_point(codesign_cert or rig.aws.engine.signer().cert_pem)
    assert problem is None, problem
    (dev.root / CODESIGN_FILE).write_bytes(point)
    dev.start()
    dev.wait_log("engine: connected")
    return dev


def put_file(rig: Rig, key: str, data: bytes) -> dict:
    path = rig.aws.files / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"bucket": "e2e-bucket", "key": key}


def ota_file(location: dict, file_type: int = 0, name: str = "firmware.bin", signing=None) -> dict:
    return {
        "fileName": name,
        "fileType": file_type,
        "fileLocation": {"s3Location": location},
        "codeSigning": signing or {"startSigningJobParameter": {"signingProfileName": "standin-local"}},
    }


def create_update(rig: Rig, ota_id: str, thing: str, files: list, protocols=("MQTT",)) -> str:
    """CreateOTAUpdate through the control plane's engine (what boto3 reaches); the job id."""
    body = {
        "targets": [rig.aws.arn("thing", thing)],
        "files": files,
        "roleArn": ROLE,
        "protocols": list(protocols),
    }
    answer = rig.aws.engine.create_ota_update(ota_id, body)
    info = rig.aws.engine.get_ota_update(ota_id)["otaUpdateInfo"]
    assert info["otaUpdateStatus"] == "CREATE_COMPLETE", info
    return answer["awsIotJobId"]


def aws_cli(aws: StandIn, *args) -> dict:
    """`aws iot <args>` (aws-cli) against the stand-in's control plane; its JSON answer."""
    env = dict(
        os.environ, AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local", AWS_DEFAULT_REGION="us-east-1"
    )
    out = subprocess.run(
        [str(Path(sys.executable).parent / "aws"), "--endpoint-url", aws.control_url, "iot", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if out.stdout.strip() else {}
