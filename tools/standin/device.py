"""A simulated device for tests and the load test: a paho client with its own certificate.

dev = Device.connect(aws, "thing-1")            # subscribed to its jobs topics
answer = dev.request("start-next", {})          # waits for .../accepted or .../rejected
note = dev.expect("notify-next")                # next notify-next message
"""

import itertools
import json
import queue
import ssl
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from tools.standin.device_api import classify

_TOKENS = itertools.count(1)


@dataclass
class Reply:
    accepted: bool
    topic: str
    payload: dict
    latency: float

    @property
    def code(self):
        return None if self.accepted else self.payload.get("code")


class Device:
    def __init__(self, name: str, port: int, ca, cert, key, host: str = "localhost", subscribe=None):
        self.name = name
        self.prefix = f"$aws/things/{name}/jobs/"
        self.messages: queue.Queue = queue.Queue()
        self.waiting: dict = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._connected = threading.Event()
        self.suback: list = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311)
        self.client.tls_set(
            ca_certs=str(ca), certfile=str(cert), keyfile=str(key), tls_version=ssl.PROTOCOL_TLS_CLIENT
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_connect = self._on_connect
        self._filters = [self.prefix + "#"] if subscribe is None else list(subscribe)
        self.host, self.port = host, port

    @classmethod
    def connect(cls, aws, name: str, kind: str = "ec", subscribe=None, timeout: float = 10.0) -> "Device":
        """Register `name` on the stand-in `aws`, connect and subscribe (default: its jobs topics)."""
        ident = aws.thing(name, kind)
        dev = cls(name, aws.port, aws.ca.cert_pem, ident.cert_pem, ident.key_pem, subscribe=subscribe)
        dev.start(timeout)
        return dev

    def start(self, timeout: float = 10.0) -> "Device":
        self.client.connect_async(self.host, self.port, keepalive=60)
        self.client.loop_start()
        if not self._connected.wait(timeout):
            raise TimeoutError(f"{self.name}: no CONNACK within {timeout}s")
        if self._filters and not self._subscribed.wait(timeout):
            raise TimeoutError(f"{self.name}: no SUBACK within {timeout}s")
        return self

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if not reason.is_failure:
            if self._filters:
                client.subscribe([(f, 1) for f in self._filters])
            self._connected.set()

    def _on_subscribe(self, client, userdata, mid, reasons, properties) -> None:
        self.suback = [r.value for r in reasons]
        self._subscribed.set()

    def _on_message(self, client, userdata, message) -> None:
        arrived = time.monotonic()
        if classify(message.topic) is not None:
            return  # the echo of our own request (we subscribe to our whole jobs tree)
        try:
            payload = json.loads(message.payload)
        except ValueError:
            payload = {"raw": message.payload.decode(errors="replace")}
        token = payload.get("clientToken") if isinstance(payload, dict) else None
        if token is not None and message.topic.endswith(("/accepted", "/rejected")):
            with self._lock:
                slot = self.waiting.pop(token, None)  # a duplicate answer goes to .messages
            if slot is not None:
                slot.put((message.topic, payload, arrived))
                return
        self.messages.put((message.topic, payload))

    def publish(self, suffix: str, payload, qos: int = 1) -> None:
        data = payload if isinstance(payload, bytes | str) else json.dumps(payload)
        self.client.publish(self.prefix + suffix, data, qos=qos)

    def request(self, suffix: str, payload: dict | None = None, timeout: float = 10.0) -> Reply:
        """Publish a request with a fresh clientToken and wait for its answer."""
        payload = dict(payload or {})
        token = payload.setdefault("clientToken", f"{self.name}-{next(_TOKENS)}")
        slot: queue.Queue = queue.Queue()
        with self._lock:
            self.waiting[token] = slot
        sent = time.monotonic()
        self.publish(suffix, payload)
        try:
            topic, answer, arrived = slot.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{self.name}: no answer to {suffix} within {timeout}s") from None
        finally:
            with self._lock:
                self.waiting.pop(token, None)
        return Reply(topic.endswith("/accepted"), topic, answer, arrived - sent)

    def expect(self, suffix: str, timeout: float = 10.0) -> dict:
        """The next message on `<prefix><suffix>` (others received meanwhile are kept)."""
        deadline = time.monotonic() + timeout
        kept = []
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.name}: nothing on {suffix} within {timeout}s; got {kept}")
                try:
                    topic, payload = self.messages.get(timeout=left)
                except queue.Empty:
                    continue
                if topic == self.prefix + suffix:
                    return payload
                kept.append((topic, payload))
        finally:
            for item in kept:
                self.messages.put(item)

    def drain(self, settle: float = 0.0) -> list:
        """Everything received so far (after waiting `settle` seconds for stragglers)."""
        if settle:
            time.sleep(settle)
        items = []
        while True:
            try:
                items.append(self.messages.get_nowait())
            except queue.Empty:
                return items

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
