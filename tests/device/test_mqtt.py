# micropython: needs=broker,linkproxy,responder
# micropython: timeout=90
# The MQTT transport (jobs.mqtt) against mosquitto with mutual TLS, direct and via a link proxy.
import socket
import time

from jobs import mqtt, tls
from jobsctl import broker_port, identity, proxy, proxy_port, responder
from mptest import raises

THING = "engine-1"
TOPIC = b"$aws/things/engine-1/jobs/notify"


class Recorder:
    def __init__(self):
        self.messages = []
        self.large = None
        self.chunks = []

    def message(self, topic, payload):
        self.messages.append((bytes(topic), bytes(payload)))

    def large_begin(self, topic, size):
        self.large = (bytes(topic), size)
        self.chunks = []

    def large_feed(self, chunk):
        self.chunks.append(len(chunk))

    def large_end(self):
        self.chunks.append("end")


def _client(port=None, keepalive=30, buffer_size=4096, io_ms=2000, connect_ms=3000):
    ca, cert, key = identity(THING)
    client = tls.new_client(mqtt.MQTT, THING, "localhost", port or broker_port(), keepalive, ca, cert, key)
    client.setup(buffer_size, connect_ms, io_ms)
    rec = Recorder()
    client.set_handler(rec)
    return client, rec


def _until(client, cond, ms=5000):
    deadline = time.ticks_add(time.ticks_ms(), ms)
    while not cond():
        assert time.ticks_diff(deadline, time.ticks_ms()) > 0, "condition not met in time"
        client.wait(100)


def test_qos1_round_trip_through_the_fixed_buffer():
    client, rec = _client()
    client.open([TOPIC])
    client.publish(TOPIC, b'{"n":1}', qos=1)
    _until(client, lambda: rec.messages)
    assert rec.messages == [(TOPIC, b'{"n":1}')]
    client.disconnect()


def test_packet_ids_wrap_from_65535_to_1():
    client, rec = _client()
    client.open([TOPIC])
    client.pid = 65534
    pids = [client.publish(TOPIC, b"x", qos=1) for _ in range(3)]
    assert pids == [65535, 1, 2], pids  # each waited for its own PUBACK
    assert 0 not in pids
    client.disconnect()


def test_payload_larger_than_the_buffer_is_streamed_in_chunks():
    client, rec = _client(buffer_size=4096)
    client.open([TOPIC])
    responder(cmd="publish", topic=TOPIC.decode(), size=20000)
    _until(client, lambda: rec.chunks and rec.chunks[-1] == "end")
    assert rec.large == (TOPIC, 20000)
    assert max(c for c in rec.chunks if c != "end") <= 4096
    assert sum(c for c in rec.chunks if c != "end") == 20000
    client.publish(TOPIC, b"after", qos=1)  # the link still works
    _until(client, lambda: rec.messages)
    assert rec.messages[-1] == (TOPIC, b"after")
    client.disconnect()


def test_keepalive_pings_keep_an_idle_link_alive():
    client, rec = _client(keepalive=2)
    client.open([TOPIC])
    first_ping = client.last_ping
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < 4000:  # 2 x keepalive, nothing else to do
        client.wait(500)
    assert time.ticks_diff(client.last_ping, first_ping) > 0, "no PINGREQ sent"
    assert time.ticks_diff(time.ticks_ms(), client.last_rx) < 1500, "no PINGRESP seen"
    client.disconnect()


def test_a_frozen_broker_makes_qos1_publish_fail_in_bounded_time():
    client, rec = _client(port=proxy_port(), io_ms=1000)
    client.open([TOPIC])
    proxy("freeze")
    try:
        t0 = time.ticks_ms()
        with raises(OSError):
            client.publish(TOPIC, b"lost", qos=1)
        elapsed = time.ticks_diff(time.ticks_ms(), t0)
        assert elapsed < 2500, elapsed
    finally:
        proxy("drop")
    client.close()


def test_dead_link_detected_after_one_and_a_half_keepalives():
    client, rec = _client(port=proxy_port(), keepalive=2)
    client.open([TOPIC])
    proxy("freeze")
    try:
        t0 = time.ticks_ms()
        with raises(OSError) as caught:
            while time.ticks_diff(time.ticks_ms(), t0) < 10000:
                client.wait(200)
        elapsed = time.ticks_diff(time.ticks_ms(), t0)
        assert 2500 <= elapsed <= 4500, elapsed
        assert "keepalive" in str(caught.value), caught.value
    finally:
        proxy("drop")
    client.close()


def test_connect_times_out_against_a_silent_server():
    silent = socket.socket()
    silent.bind(socket.getaddrinfo("127.0.0.1", 0)[0][-1])
    silent.listen(1)
    port = silent.getsockname()[1] if hasattr(silent, "getsockname") else None
    if port is None:
        silent.close()
        port = proxy_port()
        proxy("freeze")
    try:
        client, rec = _client(port=port, connect_ms=1000, io_ms=10000)
        t0 = time.ticks_ms()
        with raises(OSError):
            client.connect()
        elapsed = time.ticks_diff(time.ticks_ms(), t0)
        assert 900 <= elapsed < 2000, elapsed  # the connect timeout, not the I/O one
    finally:
        silent.close()
        proxy("thaw")
        proxy("drop")


def test_reconnect_resubscribes_after_the_link_is_cut():
    client, rec = _client(port=proxy_port())
    client.open([TOPIC])
    proxy("drop")
    with raises(OSError):
        for _ in range(50):
            client.wait(100)
    client.reconnect([TOPIC], 10, 100)
    assert client.connects == 2
    client.publish(TOPIC, b"again", qos=1)
    _until(client, lambda: rec.messages)
    assert rec.messages[-1] == (TOPIC, b"again")
    client.disconnect()


def test_reconnect_backs_off_and_gives_up_after_the_tries_asked():
    client, rec = _client(port=proxy_port(), connect_ms=500)
    proxy("refuse")
    slept = []
    try:
        with raises(OSError):
            client.reconnect([TOPIC], 100, 400, tries=4, idle=slept.append)
    finally:
        proxy("accept")
    assert len(slept) == 3, slept
    assert 50 <= slept[0] <= 100 and 100 <= slept[1] <= 200 and 200 <= slept[2] <= 400, slept


def test_backoff_is_bounded_and_jittered():
    values = [mqtt.backoff_ms(a, 1000, 8000) for a in range(10) for _ in range(5)]
    assert max(values) <= 8000 and min(values) >= 500
    assert len(set(mqtt.backoff_ms(30, 1000, 8000) for _ in range(20))) > 1


class _Watch:
    """Wraps the connected socket and records setblocking() calls."""

    def __init__(self, sock):
        self.sock = sock
        self.blocking = []

    def setblocking(self, flag):
        self.blocking.append(flag)
        return self.sock.setblocking(flag)

    def readinto(self, *a):
        return self.sock.readinto(*a)

    def write(self, *a):
        return self.sock.write(*a)

    def close(self):
        return self.sock.close()


def test_never_switches_the_socket_to_blocking_after_connect():
    # umqtt's wait_msg() calls sock.setblocking(True): on ESP32 that means wait for ever
    client, rec = _client()
    client.open([TOPIC])
    watch = _Watch(client.sock)
    client.sock = watch
    client.publish(TOPIC, b"1", qos=1)
    client.subscribe(TOPIC + b"/x", 1)
    _until(client, lambda: rec.messages)
    client.check_msg()
    client.wait_msg()
    assert True not in watch.blocking, watch.blocking
    client.disconnect()


def test_idle_waiting_allocates_nothing():
    import gc

    client, rec = _client()
    client.open([TOPIC])
    client.wait(0)
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        for _ in range(50):
            client.wait(0)
        grown = gc.mem_alloc() - before
    finally:
        gc.enable()
    assert grown == 0, grown
    client.disconnect()
