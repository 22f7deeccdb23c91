# micropython: needs=broker,linkproxy,responder
# micropython: timeout=90
# The MQTT transport (jobs.mqtt) against mosquitto with mutual TLS, direct and via a link proxy.
import socket
import time

from jobs import mqtt, tls
from jobsctl import broker_port, identity, proxy, proxy_port, responder
from mptest import raises
from wiresock import Recorder

THING = "engine-1"
TOPIC = b"$aws/things/engine-1/jobs/notify"


def _client(port=None, keepalive=30, buffer_size=4096, io_ms=2000, connect_ms=3000, **kw):
    client = mqtt.MQTT(
        THING,
        "localhost",
        port or broker_port(),
        keepalive,
        ssl=tls.context(*identity(THING)),
        buffer_size=buffer_size,
        connect_timeout_ms=connect_ms,
        io_timeout_ms=io_ms,
        **kw,
    )
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
    _until(client, lambda: rec.ended)
    assert rec.large == (TOPIC, 20000)
    assert max(rec.chunks) <= 4096
    assert sum(rec.chunks) == 20000
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
    idled = []
    client.reconnect([TOPIC, TOPIC + b"/2"], 10, 100, idle=idled.append)
    assert client.connects == 2
    assert idled.count(0) == 2, idled  # between the steps of the try: the watchdog is fed
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


def test_a_refused_connect_is_logged_with_host_port_and_cause():
    lines = []
    client, rec = _client(port=proxy_port(), connect_ms=500, log=lines.append)
    proxy("refuse")
    try:
        with raises(OSError):
            client.reconnect([TOPIC], 10, 20, tries=2, idle=lambda ms: None)
    finally:
        proxy("accept")
    assert len(lines) == 1, lines
    where = "mqtt: connect to localhost:" + str(proxy_port()) + " failed ("
    assert lines[0].startswith(where), lines
    assert "), retry in " in lines[0] and lines[0].endswith(" ms"), lines


def test_unsubscribe_waits_for_its_unsuback_and_stops_delivery():
    client, rec = _client()
    other = TOPIC + b"/other"
    client.open([TOPIC, other])
    client.publish(TOPIC, b"before", qos=1)
    _until(client, lambda: rec.messages)
    pid = client.pid
    client.unsubscribe(TOPIC)  # returns only once the UNSUBACK for its packet id is in
    assert client.pid == pid + 1
    client.publish(TOPIC, b"after", qos=1)  # the broker acks it but no longer delivers it
    client.publish(other, b"still", qos=1)  # while the other subscription still works
    _until(client, lambda: len(rec.messages) == 2)
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < 300:
        client.wait(50)
    assert rec.messages == [(TOPIC, b"before"), (other, b"still")], rec.messages
    client.disconnect()


def _open_fds():
    import os

    return len(os.listdir("/proc/self/fd"))


def _failed_handshakes(ctx, host, tries):
    made = []

    def factory():
        made.append(socket.socket())
        return made[-1]

    client = mqtt.MQTT(
        THING, host, broker_port(), 30, ssl=ctx, socket_factory=factory, connect_timeout_ms=3000
    )
    errors = []
    before = _open_fds()
    for _ in range(tries):
        try:
            client.connect()
        except OSError as e:
            errors.append(str(e))
    return errors, made, _open_fds() - before


def test_a_failed_handshake_closes_the_raw_socket_wrong_ca():
    from mptest import env, read

    ca, cert, key = identity(THING)
    other_ca = read(env("MPTEST_OTHER_PKI") + "/ca.cert.der")
    errors, made, leaked = _failed_handshakes(tls.context(other_ca, cert, key), "localhost", 20)
    assert len(errors) == 20 and all(e.startswith("TLS: ") for e in errors), errors[:2]
    assert [s.fileno() for s in made] == [-1] * 20  # the TLS object dropped them: we closed them
    assert leaked == 0, leaked


def test_a_failed_handshake_closes_the_raw_socket_wrong_host_name():
    # "127.1" is 127.0.0.1 to the resolver (no DNS), but not a name in the broker's certificate
    errors, made, leaked = _failed_handshakes(tls.context(*identity(THING)), "127.1", 20)
    assert len(errors) == 20 and all(e.startswith("TLS: ") for e in errors), errors[:2]
    assert "Common Name" in errors[0] or "CN" in errors[0], errors[0]
    assert [s.fileno() for s in made] == [-1] * 20
    assert leaked == 0, leaked


def test_idle_waiting_allocates_nothing():
    # 1,000 waits that each poll the TLS socket (ipoll: no list per call, as poll() makes)
    import gc

    client, rec = _client()
    client.open([TOPIC])
    client.wait(1)
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        for _ in range(1000):
            client.wait(1)
        grown = gc.mem_alloc() - before
    finally:
        gc.enable()
    print("1,000 idle waits allocated", grown, "bytes")
    assert grown == 0, grown
    client.disconnect()
