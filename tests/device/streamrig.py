# streamrig: an in-process AWS IoT stream service behind a fake MQTT link, for jobs.ops.stream.
"""The stream service answers DescribeStream and GetStream as the stand-in does (tools/standin/
streams.py: blocks o..o+n-1 or the bitmap's, at most 128 KiB per request), with knobs to drop,
reorder or refuse; the link delivers only what is subscribed, through the real jobs.client.Client
(its on_stream seam), into one buffer as the transport does.

    svc = Service(data); link = Link(svc); job = Job(link)
    digest = stream.Download(job, svc.stream, 0, len(data), sink, "p").run()
"""

import binascii
import json

from fakejobs import FakeLink
from jobs import client as C
from jobs import config, token, topics
from jobs.mqtt import LinkDown
from jobs.scan import Scanner

THING = "stream-1"
BASE = "$aws/things/" + THING + "/streams/"


_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _base64(data):
    """base64 of `data` in one buffer (the 32-bit runtime's binascii is Python and allocates a
    great deal per call)."""
    out = bytearray((len(data) + 2) // 3 * 4)
    a = _ALPHABET
    j = 0
    for i in range(0, len(data) - 2, 3):
        v = data[i] << 16 | data[i + 1] << 8 | data[i + 2]
        out[j] = a[v >> 18]
        out[j + 1] = a[v >> 12 & 63]
        out[j + 2] = a[v >> 6 & 63]
        out[j + 3] = a[v & 63]
        j += 4
    rest = len(data) % 3
    if rest:
        v = data[len(data) - rest] << 16 | (data[len(data) - 1] << 8 if rest == 2 else 0)
        out[j] = a[v >> 18]
        out[j + 1] = a[v >> 12 & 63]
        out[j + 2] = a[v >> 6 & 63] if rest == 2 else 61
        out[j + 3] = 61
    return bytes(out)


class Service:
    def __init__(self, data, stream="fw-stream", file_id=0, version=1):
        self.data = data
        self.stream = stream
        self.file_id = file_id
        self.version = version
        self.requests = []  # every GetStream request, decoded
        self.served = []  # block ids sent
        self.drop_once = set()  # block ids not sent the first time they are asked for
        self.reverse = False  # answer a request's blocks last first
        self.reject = None  # (code, message): every GetStream answered on rejected/json
        self.reject_once = None  # the same, for the next GetStream only
        self.size = None  # the size DescribeStream gives (default: the file's)
        self.silent = False  # answer nothing
        self._cache = {}

    def block(self, index, length):
        """The data message of block `index` (built once, so delivering it allocates nothing)."""
        key = (index, length)
        if key not in self._cache:
            chunk = self.data[index * length : index * length + length]
            body = {"c": "x", "f": self.file_id, "l": len(chunk), "i": index}
            self._cache[key] = (json.dumps(body)[:-1] + ',"p":"').encode() + _base64(chunk) + b'"}'

        return self._cache[key]

    def answer(self, topic, payload):
        if self.silent or not topic.startswith(BASE + self.stream + "/"):
            return []
        base = BASE + self.stream + "/"
        request = json.loads(payload)
        if topic.endswith("/describe/json"):
            size = len(self.data) if self.size is None else self.size
            body = {
                "c": request.get("c"),
                "s": self.version,
                "d": "test",
                "r": [{"f": self.file_id, "z": size}],
            }
            return [(base + "description/json", json.dumps(body).encode())]
        self.requests.append(request)
        refusal = self.reject_once or self.reject
        self.reject_once = None
        if refusal is None and request.get("s") not in (None, self.version):
            refusal = ("VersionMismatch", "stream version is " + str(self.version))
        if refusal is not None:
            body = {"o": refusal[0], "m": refusal[1], "c": request.get("c")}
            return [(base + "rejected/json", json.dumps(body).encode())]
        length = request["l"]
        total = -(-len(self.data) // length)
        offset = request.get("o", 0)
        if "b" in request:
            bits = binascii.unhexlify(request["b"])
            wanted = [offset + 8 * j + k for j in range(len(bits)) for k in range(8) if bits[j] >> k & 1]
            wanted = wanted[: request["n"]] if "n" in request else wanted
        else:
            wanted = list(range(offset, offset + request.get("n", 131072 // length)))
        wanted = [i for i in wanted if i < total][: max(1, 131072 // length)]
        if self.reverse:
            wanted.reverse()
        out = []
        for i in wanted:
            if i in self.drop_once:
                self.drop_once.discard(i)
                continue
            self.served.append(i)
            out.append((base + "data/json", self.block(i, length)))
        return out


class Link(FakeLink):
    """fakejobs.FakeLink with subscriptions: what is published is answered by the stream service
    and delivered by wait() only when subscribed."""

    def __init__(self, service, buffer_size=8192):
        super().__init__(service, buffer_size)
        self.subs = []
        self.subscribed = []  # every SUBSCRIBE, in order
        self.unsubscribed = []
        self.cut_after = None  # deliveries before the link drops (once)

    def reconnect(self, subscriptions, lo=0, hi=0, tries=0, idle=None):
        super().reconnect(subscriptions, lo, hi)
        self.subs = [bytes(t) for t in subscriptions]

    def close(self):
        super().close()
        self.subs = []

    def subscribe(self, topic, qos=1):
        self._live()
        self.subs.append(bytes(topic))
        self.subscribed.append(bytes(topic))

    def unsubscribe(self, topic):
        self._live()
        self.subs.remove(bytes(topic))
        self.unsubscribed.append(bytes(topic))

    def _live(self):
        if not self.connected:
            raise LinkDown("not connected")

    def publish(self, topic, msg, retain=False, qos=0):
        self._live()
        self.queue.extend(self.service.answer(bytes(topic).decode(), bytes(msg)))
        return 0

    def wait(self, ms):
        self._live()
        if self.cut_after is not None:
            if self.cut_after <= 0:
                self.cut_after = None
                self.close()
                raise LinkDown("injected link loss")
            self.cut_after -= 1
        while self.queue:
            topic, payload = self.queue.pop(0)
            t = topic.encode()
            if t not in self.subs:
                continue
            self.tbuf[: len(t)] = t
            n = len(payload)
            if n > len(self.buf):
                self.handler.large_begin(self.tmv[: len(t)], n)
                self.handler.large_end()
                return True
            self.buf[:n] = payload
            self.handler.message(self.tmv[: len(t)], self.mv[:n])
            return True
        return False


class Job:
    """The parts of jobs.job.Job a stream download uses: the last progress, the checkpoints."""

    def __init__(self, link, phase=None, data=None, **settings):
        raw = {
            "endpoint": "localhost",
            "thing_name": THING,
            "request_timeout_ms": 200,
            "retry_base_ms": 10,
            "reconnect_min_ms": 10,
            "reconnect_max_ms": 100,
            "telemetry_interval_s": 0,
        }
        raw.update(settings)
        self.config = config.validate(raw)
        self.logs = []
        self.client = C.Client(link, topics.Topics(THING), token.Tokens("abcd1234"), Scanner(), self.config,
                               lambda *a: self.logs.append(" ".join(str(x) for x in a)))  # fmt: skip
        self.link = link
        self.phase = phase
        self.data = data if data is not None else {}
        self.execution_number = 1
        self.last_update = None
        self.progressed = 0
        self.checkpoints = []
        self.cancel_after = None

    def mqtt(self):
        if not self.link.connected:
            self.link.reconnect(self.client.topics.subscriptions())
        return self.link, self.client

    def progress(self, details=None, must=False):
        if self.cancel_after is not None:
            if self.cancel_after <= 0:
                return False
            self.cancel_after -= 1
        self.last_update = details
        self.progressed += 1
        return True

    def checkpoint(self, phase, data=None):
        self.phase = phase
        self.data = data or {}
        self.checkpoints.append((phase, dict(self.data)))
