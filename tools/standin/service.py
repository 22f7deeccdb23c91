"""The Jobs service process: an MQTT client on the broker answering `$aws/things/+/jobs/#`.

Run by `StandIn` (or `python -m tools.standin service --state DIR`) as its own process so tests
can kill it. State lives in SQLite; notifications the control plane causes wait in the outbox
table until this process publishes them. Settings (fast clock, faults) are re-read while running.
"""

import collections
import heapq
import itertools
import json
import os
import random
import signal
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from tools.broker import SERVICE_IDENTITY
from tools.standin.device_api import DeviceApi, classify
from tools.standin.presence import Presence
from tools.standin.retained import RetainedWatch
from tools.standin.store import Store
from tools.standin.streams import StreamApi

REQUESTS = "$aws/things/+/jobs/#"
STREAMS = "$aws/things/+/streams/#"
_TICK = 0.02


class JobsService:
    def __init__(self, folder: Path, port: int):
        self.folder = Path(folder)
        self.port = port
        self.store = Store(self.folder / "state.sqlite")
        self.engine = DeviceApi(self.store)
        self.streams = StreamApi(self.store)
        self.requests = 0
        self.random = random.Random()
        self._delayed: list = []
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._outbox_after = 0
        self._unacked: dict = {}  # message id -> outbox row id
        self._acks: collections.deque = collections.deque()  # filled by paho's thread
        pki = self.folder / "broker" / "pki"
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=SERVICE_IDENTITY,
            clean_session=False,  # requests published while we restart wait in the broker
            protocol=mqtt.MQTTv311,
        )
        self.client.tls_set(
            ca_certs=str(pki / "ca.cert.pem"),
            certfile=str(pki / f"{SERVICE_IDENTITY}.cert.pem"),
            keyfile=str(pki / f"{SERVICE_IDENTITY}.key.pem"),
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_publish = lambda client, userdata, mid, reason, properties: self._acks.append(mid)
        # beside the Jobs topics: who is connected (the broker's log) and the retained messages
        self.presence = Presence(self.store, self.folder / "broker" / "mosquitto.log")
        self.retained = RetainedWatch(
            self.store,
            port,
            pki / "ca.cert.pem",
            pki / f"{SERVICE_IDENTITY}.cert.pem",
            pki / f"{SERVICE_IDENTITY}.key.pem",
            client_id=f"{SERVICE_IDENTITY}-retained",
        )

    # ----- MQTT callbacks -----------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            print(f"jobs service: connect refused: {reason}", file=sys.stderr, flush=True)
            return
        # answers are small: with Nagle each waits for the broker's delayed ACK (~40 ms)
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe([(REQUESTS, 1), (STREAMS, 1)])

    def _on_subscribe(self, client, userdata, mid, reasons, properties) -> None:
        ready = self.folder / "service.ready"
        ready.with_suffix(".tmp").write_text(str(os.getpid()))
        ready.with_suffix(".tmp").replace(ready)

    def _on_message(self, client, userdata, message) -> None:
        try:
            self._publish(self._answer(message.topic, message.payload))
        except Exception as err:  # noqa: BLE001 - a bug must not stop the service: InternalError
            print(f"jobs service: {message.topic}: {err!r}", file=sys.stderr, flush=True)
            self._publish(self.engine.reject(message.topic, message.payload, "InternalError", str(err)))

    def _answer(self, topic: str, payload: bytes) -> list:
        route = classify(topic)
        if route is None:
            return self.streams.handle(topic, payload, self.engine.settings)
        # read per request (one small SELECT): a fault set over the control plane applies to the
        # very next request, so a test need not wait for the ticker's periodic refresh
        settings = self.engine.refresh_settings()
        if route[0] != "invalid":
            self.requests += 1
            every = int(settings["throttle_every"])
            if every and self.requests % every == 0:
                return self.engine.reject(topic, payload, "RequestThrottled", "Rate exceeded")
            rate = float(settings["internal_error_rate"])
            if rate and self.random.random() < rate:
                return self.engine.reject(topic, payload, "InternalError", "Internal error (injected)")
        return self.engine.handle(topic, payload)

    # ----- publishing ---------------------------------------------------------------------
    def _publish(self, messages, delay: float | None = None) -> list:
        """Publish (with the fault settings); the message ids of the immediate first copies."""
        settings = self.engine.settings
        delay = float(settings["response_delay"]) if delay is None else delay
        copies = 2 if settings["duplicate_responses"] else 1
        mids = []
        for topic, payload in messages:
            data = json.dumps(payload, separators=(",", ":"))
            mid = None
            for _ in range(copies):
                if delay > 0:
                    with self._lock:
                        heapq.heappush(
                            self._delayed, (time.monotonic() + delay, next(self._order), topic, data)
                        )
                else:
                    info = self.client.publish(topic, data, qos=1)
                    mid = info.mid if mid is None else mid
            mids.append(mid)
        return mids

    def _pump_outbox(self) -> None:
        """Publish waiting notifications; delete each once the broker has acknowledged it.

        At least once: rows still unacknowledged when the service dies are published again by
        the next service process.
        """
        acked = []
        while self._acks:
            mid = self._acks.popleft()
            if mid in self._unacked:
                acked.append(self._unacked.pop(mid))
        for row_id, topic, payload in self.engine.outbox_after(self._outbox_after):
            self._outbox_after = row_id
            (mid,) = self._publish([(topic, payload)])
            if mid is None:  # delayed by fault injection: not tracked
                acked.append(row_id)
            else:
                self._unacked[mid] = row_id
        if acked:
            self.engine.ack_outbox(acked)

    def _tick(self) -> None:
        last_settings = last_expire = last_presence = 0.0
        while not self._stopping.is_set():
            moment = time.monotonic()
            try:
                if moment - last_settings > 0.2:
                    self.engine.refresh_settings()
                    last_settings = moment
                if moment - last_expire > 0.05:
                    self._publish(self.engine.expire())
                    last_expire = moment
                self._pump_outbox()
                if moment - last_presence > 0.1:
                    self.presence.poll()
                    last_presence = moment
                with self._lock:
                    due = []
                    while self._delayed and self._delayed[0][0] <= moment:
                        due.append(heapq.heappop(self._delayed))
                for _, _, topic, data in due:
                    self.client.publish(topic, data, qos=1)
            except Exception as err:  # noqa: BLE001 - the ticker must keep running
                print(f"jobs service: tick: {err!r}", file=sys.stderr, flush=True)
            self._stopping.wait(_TICK)

    def run(self) -> None:
        # paho's loop runs in its own thread (loop_start): publish() from the ticker then only
        # queues. Under loop_forever() it would write the TLS socket from the calling thread,
        # concurrently with the loop, and corrupt the stream (mosquitto: "out of memory").
        signal.signal(signal.SIGTERM, lambda *_: self._stopping.set())
        self.client.connect_async("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        self.retained.start()
        try:
            self._tick()
        finally:
            self.retained.stop()
            self.client.disconnect()
            self.client.loop_stop()


def main(folder: str, port: int) -> int:
    JobsService(Path(folder), port).run()
    return 0
