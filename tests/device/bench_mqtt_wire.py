# CPU and allocation of the MQTT transport's per-message paths, inside MicroPython.
"""Usage: MICROPYPATH=.frozen:lib:build/deps:tests/device micropython -X heapsize=16M \
            tests/device/bench_mqtt_wire.py [N] [runs] [module...]

jobs.mqtt over an in-memory socket (no broker, no TLS): the transport's own cost per
QoS 0 publish (a 200-byte Jobs update), per QoS 1 publish (its PUBACK already waiting),
and per received QoS 1 PUBLISH (a 300-byte notify-next, answered with a PUBACK), plus
idle waits (wait(0), nothing to read). Mean microseconds and bytes allocated per operation
(gc disabled, so garbage counts too). The socket's reads come from a C `io.BytesIO` and its
writes are counted, not kept, so it allocates nothing itself. Each figure is the best of
`runs` rounds; with several modules (transports with this constructor, e.g. a changed copy
put on the path under another name) the rounds alternate between them, so a change in the
machine's load affects each alike.
"""

import gc
import io
import sys
import time

from wiresock import WireSocket

TOPIC = b"$aws/things/bench-thing-0001/jobs/job-0001/update"
UPDATE = (
    b'{"status":"IN_PROGRESS","statusDetails":{"step":"3"},"expectedVersion":2,"clientToken":"feed0001-17"}'
)
UPDATE = UPDATE + b" " * (200 - len(UPDATE))
NOTIFY = b"$aws/things/bench-thing-0001/jobs/notify-next"
NOTE = b'{"timestamp":1700000001,"execution":{"jobId":"job-0001","status":"QUEUED","versionNumber":1}}'
NOTE = NOTE + b" " * (300 - len(NOTE))


class Sink(WireSocket):
    """The scripted socket, reading from a C BytesIO and counting what is written."""

    def __init__(self, incoming=b""):
        super().__init__()
        self.rx = io.BytesIO(incoming)
        self.written = 0

    def readinto(self, buf, nbytes=-1):
        n = self.rx.readinto(buf) if nbytes < 0 else self.rx.readinto(buf, nbytes)
        return n if n else None

    def write(self, buf, off=0, n=-1):
        n = len(buf) - off if n < 0 else n
        self.written += n
        return n


class Quiet:
    def message(self, topic, payload):
        pass


def link(mqtt, incoming):
    """A connected transport reading `incoming`."""
    sock = Sink(b"\x20\x02\x00\x00" + incoming)
    c = mqtt.MQTT(b"bench", "127.0.0.1", 1883, 60, socket_factory=lambda: sock)
    c.connect()
    c.set_handler(Quiet())
    return c


def measure(best, name, n, fn):
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    t0 = time.ticks_us()
    fn(n)
    us = time.ticks_diff(time.ticks_us(), t0)
    allocated = gc.mem_alloc() - before
    gc.enable()
    old = best.get(name)
    if old is None or us / n < old[0]:
        best[name] = (us / n, allocated / n)


def main(mqtt, n, best):
    c = link(mqtt, b"")

    def publish0(k):
        for _ in range(k):
            c.publish(TOPIC, UPDATE)

    measure(best, "publish_qos0", n, publish0)

    c = link(mqtt, b"".join(bytes([0x40, 2, pid >> 8, pid & 0xFF]) for pid in range(1, n + 1)))

    def publish1(k):
        for _ in range(k):
            c.publish(TOPIC, UPDATE, qos=1)

    measure(best, "publish_qos1", n, publish1)

    one = bytes(
        [0x32, 0x80 | ((2 + len(NOTIFY) + 2 + len(NOTE)) & 0x7F), (2 + len(NOTIFY) + 2 + len(NOTE)) >> 7]
    )
    head = one + bytes([0, len(NOTIFY)]) + NOTIFY
    c = link(mqtt, b"".join(head + bytes([pid >> 8, pid & 0xFF]) + NOTE for pid in range(1, n + 1)))

    def receive(k):
        for _ in range(k):
            c.wait(0)

    measure(best, "receive_qos1", n, receive)

    c = link(mqtt, b"")

    def idle(k):
        for _ in range(k):
            c.wait(0)

    measure(best, "idle_wait0", n, idle)


n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
modules = [__import__(name, None, None, ["MQTT"]) for name in (sys.argv[3:] or ["jobs.mqtt"])]
results = [{} for _ in modules]
for _ in range(runs):
    for i, module in enumerate(modules):
        main(module, n, results[i])
for i, module in enumerate(modules):
    best = results[i]
    for name in sorted(best):
        us, allocated = best[name]
        print("@@bench", module.__name__, name, "us_per_op", f"{us:.2f}", "bytes_per_op", allocated)
