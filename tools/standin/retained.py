"""Retained messages, as AWS IoT keeps them for `iot-data` ListRetainedMessages / GetRetainedMessage.

mosquitto keeps the retained message of each topic for its subscribers; the Jobs service also
records it in the store (`RetainedWatch`, an MQTT 5 subscription with retain-as-published, so a
retained message published while it listens is told from a plain one). A retained message with
an empty payload deletes the topic's, as on AWS. The devices' telemetry topics
(`logi2/device/<thing>`) are the only ones a thing may publish to besides its jobs topics.
"""

import base64
import ssl
import sys

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from tools.standin.core import ApiError, prune
from tools.standin.store import Store, now

TOPICS = "logi2/#"


def record(store: Store, topic: str, payload: bytes, qos: int, at: float | None = None) -> None:
    """Keep (or, for an empty payload, forget) the retained message of `topic`."""
    at = now() if at is None else at
    with store.transaction() as db:
        if not payload:
            db.execute("DELETE FROM retained WHERE topic = ?", (topic,))
            return
        row = db.execute("SELECT payload, qos FROM retained WHERE topic = ?", (topic,)).fetchone()
        if row is not None and bytes(row["payload"]) == payload and row["qos"] == qos:
            return  # the broker handing the same message again (a resubscription): not modified
        db.execute(
            "INSERT OR REPLACE INTO retained (topic, payload, qos, modified) VALUES (?, ?, ?, ?)",
            (topic, payload, qos, at),
        )


def list_retained(store: Store, next_token=None, max_results=None) -> dict:
    """ListRetainedMessages: topic, payloadSize, qos, lastModifiedTime (epoch ms); paged."""
    try:
        start = int(next_token or 0)
        size = int(max_results or 200)
    except ValueError:
        raise ApiError("InvalidRequestException", "nextToken and maxResults must be numbers") from None
    if not 1 <= size <= 200:
        raise ApiError("InvalidRequestException", "maxResults must be 1-200")
    rows = (
        store.read()
        .execute(
            "SELECT topic, length(payload) AS size, qos, modified FROM retained "
            "ORDER BY topic LIMIT ? OFFSET ?",
            (size + 1, start),
        )
        .fetchall()
    )
    page = {
        "retainedTopics": [
            {
                "topic": r["topic"],
                "payloadSize": r["size"],
                "qos": r["qos"],
                "lastModifiedTime": int(r["modified"] * 1000),
            }
            for r in rows[:size]
        ]
    }
    if len(rows) > size:
        page["nextToken"] = str(start + size)
    return page


def get_retained(store: Store, topic: str) -> dict:
    """GetRetainedMessage: topic, payload (base64 on the wire), qos, lastModifiedTime (epoch ms)."""
    row = store.read().execute("SELECT * FROM retained WHERE topic = ?", (topic,)).fetchone()
    if row is None:
        raise ApiError("ResourceNotFoundException", f"No retained message found for topic {topic}", 404)
    return prune(
        {
            "topic": topic,
            "payload": base64.b64encode(bytes(row["payload"])).decode(),
            "qos": row["qos"],
            "lastModifiedTime": int(row["modified"] * 1000),
        }
    )


class RetainedWatch:
    """An MQTT 5 client of the service identity that records retained messages into the store."""

    def __init__(self, store: Store, port: int, ca, cert, key, client_id: str):
        self.store = store
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.tls_set(
            ca_certs=str(ca), certfile=str(cert), keyfile=str(key), tls_version=ssl.PROTOCOL_TLS_CLIENT
        )
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.port = port

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if not reason.is_failure:
            client.subscribe(TOPICS, options=SubscribeOptions(qos=1, retainAsPublished=True))

    def _on_message(self, client, userdata, message) -> None:
        if not message.retain:
            return
        try:
            record(self.store, message.topic, message.payload, message.qos)
        except Exception as err:  # noqa: BLE001 - one bad write must not stop the watch
            print(f"retained: {message.topic}: {err!r}", file=sys.stderr, flush=True)

    def start(self) -> "RetainedWatch":
        self.client.connect_async("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
