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
"""

import json
import ssl
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from tools.broker import SERVICE_IDENTITY
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

    def __init__(self, rig: "Rig", name: str, root: Path):
        self.rig = rig
        self.aws = rig.aws
        self.name = name
        self.root = root
        self.sim = SimDevice(root)

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
        path = self.root / "board" / "pins.log"
        return path.read_text().splitlines() if path.exists() else []

    def set_input(self, number: int, level: int) -> None:
        """The level an input pin reads (before the device first touches its pins)."""
        path = self.root / "board" / "pins.json"
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
        return json.loads((self.root / "board" / "otadata.json").read_text())

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

    def start(self) -> "Rig":
        self.aws.start()
        return self

    def stop(self) -> None:
        self.stop_devices()
        self.aws.stop()

    def stop_devices(self) -> None:
        """Switch off every device of the test that ends (their folders stay for a post-mortem)."""
        for device in self.devices:
            device.stop()
        self.devices.clear()

    def provision(self, name: str, kind: str = "ec", ident=None, **config) -> Device:
        """A device folder with config.json and its DER certificates; not powered on."""
        ident = ident or self.aws.thing(name, kind)
        root = self.folder / "devices" / name
        settings = {"thing_name": name, "endpoint": "localhost", "port": self.aws.port, **FAST, **config}
        provision(root, settings, self.aws.ca.cert_der, ident.cert_der, ident.key_der)
        device = Device(self, name, root)
        self.devices.append(device)
        return device

    def device(self, name: str, kind: str = "ec", **config) -> Device:
        """A provisioned device, powered on and connected (its first start-next answered)."""
        device = self.provision(name, kind, **config)
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
