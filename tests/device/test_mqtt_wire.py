# micropython: heapsize=32M
# jobs.mqtt byte for byte over a scripted socket (tests/device/wiresock.py): no broker, no TLS.
# The expected bytes are written out from the MQTT 3.1.1 specification, not computed by the
# code under test. 32M: the 2 MiB packets of the Remaining Length boundaries, sent and received.
import time

from jobs import mqtt
from mptest import raises
from umqtt.simple import MQTTException
from wiresock import Recorder, WireSocket, publish_packet

CONNACK = b"\x20\x02\x00\x00"
TOPIC = b"$aws/things/t1/jobs/notify-next"
# Remaining Length -> its variable byte integer (MQTT 3.1.1, 2.2.3), at every width boundary
LENGTHS = (
    (0, b"\x00"),
    (127, b"\x7f"),
    (128, b"\x80\x01"),
    (16383, b"\xff\x7f"),
    (16384, b"\x80\x80\x01"),
    (2097151, b"\xff\xff\x7f"),
    (2097152, b"\x80\x80\x80\x01"),
)


def _link(sock=None, keepalive=60, buffer_size=8192, io_ms=300, connect_ms=300, connack=CONNACK, log=None):
    sock = sock or WireSocket()
    link = mqtt.MQTT(
        b"thing-1",
        "127.0.0.1",
        1883,
        keepalive,
        socket_factory=lambda: sock,
        buffer_size=buffer_size,
        connect_timeout_ms=connect_ms,
        io_timeout_ms=io_ms,
        log=log or print,
    )
    rec = Recorder()
    link.set_handler(rec)
    if connack is not None:
        sock.feed(connack)
        link.connect()
        sock.sent()  # the CONNECT, checked in its own test
    return link, sock, rec


def _elapsed(t0):
    return time.ticks_diff(time.ticks_ms(), t0)


# -- the surface --------------------------------------------------------------------------


def test_public_methods_are_exactly_the_transports_own():
    link, sock, rec = _link(connack=None)
    public = sorted(n for n in dir(link) if not n.startswith("_") and callable(getattr(link, n)))
    assert public == [
        "close",
        "connect",
        "disconnect",
        "open",
        "ping",
        "publish",
        "reconnect",
        "set_handler",
        "subscribe",
        "unsubscribe",
        "wait",
    ], public
    for name in ("connected", "connects", "dropped"):
        assert hasattr(link, name), name
    assert not hasattr(mqtt, "backoff_ms")  # jobs.clock has the one backoff rule


# -- connect ------------------------------------------------------------------------------


def test_connect_sends_connect_and_returns_session_present():
    sock = WireSocket()
    sock.feed(b"\x20\x02\x01\x00")  # session present
    link, sock, rec = _link(sock, keepalive=60, connack=None)
    assert link.connect(clean_session=False) == 1
    # 10 bytes of variable header + 2 + 7 of client id; flags 0 (no clean session), keepalive 60
    assert sock.sent() == b"\x10\x13\x00\x04MQTT\x04\x00\x00\x3c\x00\x07thing-1", sock.out
    assert sock.addr is not None and link.connected and link.connects == 1
    sock.feed(b"\x20\x02\x00\x00")
    assert link.connect() == 0  # clean session: flag 0x02
    assert sock.sent()[9] == 0x02
    assert link.connects == 2


def test_connack_refusals_raise_umqtts_exception_with_the_code():
    for code in (1, 2, 3, 4, 5):
        sock = WireSocket()
        sock.feed(bytes([0x20, 2, 0, code]))
        link, sock, rec = _link(sock, connack=None)
        with raises(MQTTException) as caught:
            link.connect()
        assert caught.value.args[0] == code, caught.value.args
        assert sock.closed and not link.connected and link.connects == 0


def test_no_connack_within_the_connect_timeout():
    link, sock, rec = _link(connack=None, connect_ms=200, io_ms=5000)
    t0 = time.ticks_ms()
    with raises(OSError) as caught:
        link.connect()
    assert 190 <= _elapsed(t0) < 1000, _elapsed(t0)
    assert str(caught.value) == "MQTT: no answer within 200 ms", caught.value
    assert isinstance(caught.value, mqtt.LinkDown) and sock.closed


def test_closed_before_connack_says_what_usually_causes_it():
    sock = WireSocket()
    sock.eof()
    link, sock, rec = _link(sock, connack=None)
    with raises(mqtt.LinkDown) as caught:
        link.connect()
    assert str(caught.value).startswith("MQTT: connection closed by the broker before CONNACK"), caught.value


def test_a_refused_tcp_connect_names_the_step():
    class Refusing(WireSocket):
        def connect(self, addr):
            raise OSError(111)

    link, sock, rec = _link(Refusing(), connack=None)
    with raises(mqtt.LinkDown) as caught:
        link.connect()
    assert str(caught.value).startswith("TCP: "), caught.value
    assert sock.closed


def test_reconnect_logs_host_port_cause_and_delay_then_succeeds():
    lines = []
    socks = []

    def factory():
        s = WireSocket()
        if len(socks) == 0:
            s.feed(b"\x20\x02\x00\x05")  # refused: not authorized
        elif len(socks) == 1:
            s.eof()  # closed before CONNACK
        else:
            s.feed(CONNACK)
            s.feed(b"\x90\x03\x00\x01\x01")  # SUBACK for the one subscription
        socks.append(s)
        return s

    link = mqtt.MQTT(b"thing-1", "127.0.0.1", 1883, 60, socket_factory=factory, log=lines.append)
    slept = []
    link.reconnect([TOPIC], 100, 400, idle=slept.append)
    assert link.connected and len(socks) == 3
    where = "mqtt: connect to 127.0.0.1:1883 failed ("
    assert lines[0] == where + "CONNECT refused, CONNACK 5), retry in " + str(slept[0]) + " ms"
    assert lines[1].startswith(where + "MQTT: connection closed by the broker"), lines
    assert lines[1].endswith("), retry in " + str(slept[1]) + " ms"), lines
    assert 50 <= slept[0] <= 100 and 100 <= slept[1] <= 200, slept
    assert socks[0].closed and socks[1].closed and not socks[2].closed


def test_never_switches_the_socket_to_blocking():
    link, sock, rec = _link()
    sock.feed(publish_packet(TOPIC, b"x", qos=1, pid=1))
    link.wait(100)
    sock.feed(b"\x40\x02\x00\x01")
    link.publish(TOPIC, b"y", qos=1)
    link.ping()
    link.wait(0)
    assert sock.blocking == [False], sock.blocking


# -- Remaining Length ---------------------------------------------------------------------


def test_publish_encodes_remaining_length_at_every_boundary():
    link, sock, rec = _link()
    for length, encoded in LENGTHS[1:]:
        payload = bytes(length - 3)  # topic b"t": 2 + 1 bytes
        link.publish(b"t", payload)
        head = b"\x30" + encoded + b"\x00\x01t"
        out = sock.out
        assert len(out) == len(head) + len(payload), (length, len(out))
        assert out[: len(head)] == head, (length, bytes(out[:8]))
        sock.out = bytearray()


def test_receive_decodes_remaining_length_at_every_boundary():
    link, sock, rec = _link(buffer_size=8192)
    for length, encoded in LENGTHS[1:]:
        payload = bytes([length & 0xFF]) * (length - 3)
        sock.feed(b"\x30" + encoded + b"\x00\x01t" + payload)
        rec.messages, rec.large, rec.chunks = [], None, []
        assert link.wait(1000)
        if length - 3 <= 8192:
            assert rec.messages == [(b"t", payload)], length
        else:
            assert rec.large == (b"t", length - 3) and sum(rec.chunks) == length - 3, (length, rec.large)
    sock.feed(b"\xd0\x00")  # the stream is still in step
    assert link.wait(100)


def test_a_remaining_length_over_four_bytes_is_refused():
    link, sock, rec = _link()
    sock.feed(b"\x30\xff\xff\xff\xff\x01")
    with raises(mqtt.LinkDown) as caught:
        link.wait(100)
    assert "remaining length" in str(caught.value)


def test_a_packet_over_the_largest_remaining_length_is_not_sent():
    link, sock, rec = _link()

    class Huge:  # a length only: no 256 MiB buffer is needed to be refused
        def __len__(self):
            return 268435455

    with raises(ValueError):
        link.publish(b"t", Huge())
    assert sock.out == b""


# -- packet ids ---------------------------------------------------------------------------


def test_packet_ids_wrap_from_65535_to_1_never_0():
    link, sock, rec = _link()
    link.pid = 65534
    for pid in (65535, 1, 2):
        sock.feed(bytes([0x40, 2, pid >> 8, pid & 0xFF]))
    pids = [link.publish(b"t", b"x", qos=1) for _ in range(3)]
    assert pids == [65535, 1, 2], pids
    assert sock.sent() == (
        b"\x32\x06\x00\x01t\xff\xffx" + b"\x32\x06\x00\x01t\x00\x01x" + b"\x32\x06\x00\x01t\x00\x02x"
    )
    link.pid = 65535
    sock.feed(b"\x90\x03\x00\x01\x01")
    link.subscribe(b"a", 1)  # SUBSCRIBE shares the counter
    assert sock.sent() == b"\x82\x06\x00\x01\x00\x01a\x01"


def test_an_ack_for_another_packet_id_or_type_is_not_taken():
    link, sock, rec = _link()
    sock.feed(b"\x40\x02\x00\x07")  # PUBACK, wrong id
    sock.feed(b"\xb0\x02\x00\x01")  # UNSUBACK with the right id: wrong type
    sock.feed(b"\x40\x02\x00\x01")
    assert link.publish(b"t", b"x", qos=1) == 1
    assert sock.segments == []  # it read on to the right one


def test_a_missing_puback_fails_within_the_io_timeout():
    link, sock, rec = _link(io_ms=200)
    t0 = time.ticks_ms()
    with raises(mqtt.LinkDown) as caught:
        link.publish(b"t", b"x", qos=1)
    assert 190 <= _elapsed(t0) < 1000, _elapsed(t0)
    assert str(caught.value) == "no PUBACK within 200 ms", caught.value


def test_other_packets_arriving_all_the_time_do_not_extend_the_wait_for_an_ack():
    link, sock, rec = _link(io_ms=100)
    for _ in range(50000):  # far more PINGRESPs than 100 ms can read
        sock.feed(b"\xd0\x00")
    t0 = time.ticks_ms()
    with raises(mqtt.LinkDown):
        link.publish(b"t", b"x", qos=1)
    assert _elapsed(t0) < 1000, _elapsed(t0)
    assert sock.segments, "it read every packet before giving up"


def test_publish_refuses_qos_2():
    link, sock, rec = _link()
    with raises(ValueError):
        link.publish(b"t", b"x", qos=2)
    with raises(ValueError):
        link.subscribe(b"t", 2)
    assert sock.out == b""


# -- partial reads and writes -------------------------------------------------------------


def test_everything_works_one_byte_per_read():
    sock = WireSocket(max_read=1)
    link, sock, rec = _link(sock)
    sock.feed(publish_packet(TOPIC, b'{"n":1}', qos=1, pid=0x1234))
    while not rec.messages:
        assert link.wait(100)
    assert rec.messages == [(TOPIC, b'{"n":1}')]
    assert sock.sent() == b"\x40\x02\x12\x34"
    sock.feed(b"\x90\x03\x00\x01\x00")
    link.subscribe(b"a", 0)


def test_a_publish_split_across_reads_at_every_point():
    payload = b"p" * 200  # Remaining Length of two bytes, so the length itself is split too
    wire = publish_packet(TOPIC, payload, qos=1, pid=0x0102)
    link, sock, rec = _link()
    for k in range(1, len(wire)):
        sock.feed(wire[:k])
        sock.stall()  # the rest is not there yet: the read finds nothing
        sock.feed(wire[k:])
        assert link.wait(500), k
        assert rec.messages == [(TOPIC, payload)], (k, rec.messages[-1:])
        assert sock.sent() == b"\x40\x02\x01\x02", k
        rec.messages = []
    assert sock.segments == []


def test_a_packet_that_stops_midway_fails_within_the_io_timeout():
    link, sock, rec = _link(io_ms=200)
    sock.feed(publish_packet(TOPIC, b"0123456789")[:-4])
    t0 = time.ticks_ms()
    with raises(mqtt.LinkDown) as caught:
        link.wait(0)
    assert 190 <= _elapsed(t0) < 1000, _elapsed(t0)
    assert "read timed out" in str(caught.value)


def test_partial_and_refused_writes_still_send_every_byte_in_order():
    sock = WireSocket(max_write=3)
    link, sock, rec = _link(sock)
    sock.block_writes = 4  # and the first four tries find the socket full
    link.publish(b"a/b", b"hello", retain=True)
    assert sock.sent() == b"\x31\x0a\x00\x03a/bhello"
    big = bytes(range(256)) * 8  # over the 1 KiB tx buffer: header, then payload
    link.publish(b"a/b", big)
    assert sock.sent() == b"\x30\x85\x10\x00\x03a/b" + big


def test_a_blocked_write_waits_for_pollout_not_pollin():
    # a TLS socket with decrypted data buffered is readable at once: polling POLLIN would spin
    link, sock, rec = _link()
    sock.always_readable = True
    sock.writable_at = time.ticks_add(time.ticks_ms(), 150)
    t0 = time.ticks_ms()
    link.publish(b"t", b"x")
    assert _elapsed(t0) >= 140, _elapsed(t0)
    assert sock.writes < 10, sock.writes  # woken by POLLOUT, not by the readable socket
    assert sock.polls_out > 0
    assert sock.sent() == b"\x30\x04\x00\x01tx"


def test_a_write_that_never_proceeds_fails_within_the_io_timeout():
    link, sock, rec = _link(io_ms=200)
    sock.writable_at = time.ticks_add(time.ticks_ms(), 60000)
    t0 = time.ticks_ms()
    with raises(mqtt.LinkDown) as caught:
        link.publish(b"t", b"x")
    assert 190 <= _elapsed(t0) < 1000, _elapsed(t0)
    assert "write timed out" in str(caught.value)


# -- SUBSCRIBE, UNSUBSCRIBE, PING, DISCONNECT ---------------------------------------------


def test_subscribe_sends_its_filter_and_takes_the_suback():
    link, sock, rec = _link()
    sock.feed(b"\x90\x03\x00\x01\x01")
    link.subscribe(b"a/b", 1)
    assert sock.sent() == b"\x82\x08\x00\x01\x00\x03a/b\x01"


def test_a_suback_0x80_is_a_refusal():
    link, sock, rec = _link()
    sock.feed(b"\x90\x03\x00\x01\x80")
    with raises(MQTTException) as caught:
        link.subscribe(b"a/#", 1)
    assert caught.value.args[0] == 0x80


def test_unsubscribe_sends_its_filter_and_waits_for_the_unsuback():
    link, sock, rec = _link()
    sock.feed(b"\xb0\x02\x00\x09")  # another packet id: not ours
    sock.feed(b"\xb0\x02\x00\x01")
    link.unsubscribe(b"a/b")
    assert sock.sent() == b"\xa2\x07\x00\x01\x00\x03a/b"
    assert sock.segments == []


def test_unsubscribe_without_an_unsuback_fails_within_the_io_timeout():
    link, sock, rec = _link(io_ms=200)
    t0 = time.ticks_ms()
    with raises(mqtt.LinkDown) as caught:
        link.unsubscribe(b"a/b")
    assert 190 <= _elapsed(t0) < 1000, _elapsed(t0)
    assert str(caught.value) == "no UNSUBACK within 200 ms"


def test_ping_and_pingresp():
    link, sock, rec = _link()
    link.ping()
    assert sock.sent() == b"\xc0\x00"
    link.last_rx = time.ticks_add(time.ticks_ms(), -5000)
    sock.feed(b"\xd0\x00")
    assert link.wait(100) is True
    assert time.ticks_diff(time.ticks_ms(), link.last_rx) < 1000
    assert rec.messages == [] and rec.large is None
    assert link.wait(0) is False


def test_disconnect_sends_disconnect_and_closes():
    link, sock, rec = _link()
    link.disconnect()
    assert sock.sent() == b"\xe0\x00" and sock.closed and not link.connected
    with raises(mqtt.LinkDown):
        link.publish(b"t", b"x")
    with raises(mqtt.LinkDown):
        link.wait(0)


# -- keepalive and dead links -------------------------------------------------------------


def test_keepalive_pings_after_half_the_period_of_silence_either_way():
    link, sock, rec = _link(keepalive=60)
    now = time.ticks_ms()
    link.wait(0)
    assert sock.sent() == b""  # just connected: nothing due
    link.last_tx = time.ticks_add(now, -29000)
    link.wait(0)
    assert sock.sent() == b""  # 29 s of 30: not yet
    link.last_tx = time.ticks_add(now, -30000)
    link.wait(0)
    assert sock.sent() == b"\xc0\x00"  # nothing sent for keepalive/2
    link.wait(0)
    assert sock.sent() == b""  # once
    link.last_rx = link.last_ping = time.ticks_add(time.ticks_ms(), -30000)
    link.wait(0)
    assert sock.sent() == b"\xc0\x00"  # nothing received for keepalive/2 (sending is not enough)
    link.wait(0)
    assert sock.sent() == b""  # one ping per half period while waiting for the answer


def test_no_inbound_byte_for_one_and_a_half_keepalives_is_a_dead_link():
    link, sock, rec = _link(keepalive=60)
    link.last_rx = time.ticks_add(time.ticks_ms(), -89000)
    link.wait(0)  # 89 s: still alive
    link.last_rx = time.ticks_add(time.ticks_ms(), -90001)
    with raises(mqtt.LinkDown) as caught:
        link.wait(0)
    assert "keepalive" in str(caught.value)
    link, sock, rec = _link(keepalive=0)  # keepalive 0: no pings, no detector
    link.last_rx = link.last_tx = time.ticks_add(time.ticks_ms(), -1000000)
    link.wait(0)
    assert sock.sent() == b""


def test_the_broker_closing_the_link_raises_linkdown():
    link, sock, rec = _link()
    sock.eof()
    with raises(mqtt.LinkDown) as caught:
        link.wait(100)
    assert "closed" in str(caught.value)


# -- incoming PUBLISH ---------------------------------------------------------------------


def test_a_qos1_publish_is_delivered_and_answered_with_puback():
    link, sock, rec = _link()
    sock.feed(publish_packet(TOPIC, b'{"a":1}', qos=1, pid=0xABCD))
    assert link.wait(100)
    assert rec.messages == [(TOPIC, b'{"a":1}')]
    assert sock.sent() == b"\x40\x02\xab\xcd"
    sock.feed(publish_packet(TOPIC, b"q0"))
    assert link.wait(100)
    assert rec.messages[-1] == (TOPIC, b"q0") and sock.sent() == b""  # QoS 0: no answer


def test_a_payload_larger_than_the_buffer_is_streamed_to_the_handler():
    link, sock, rec = _link(buffer_size=64)
    payload = bytes(range(200))
    sock.feed(publish_packet(TOPIC, payload, qos=1, pid=5))
    assert link.wait(100)
    assert rec.large == (TOPIC, 200) and rec.chunks == [64, 64, 64, 8] and rec.ended == 1
    assert rec.messages == [] and sock.sent() == b"\x40\x02\x00\x05"
    sock.feed(publish_packet(TOPIC, b"small"))
    assert link.wait(100) and rec.messages == [(TOPIC, b"small")]


def test_a_topic_over_256_bytes_is_skipped_and_counted():
    link, sock, rec = _link()
    sock.feed(publish_packet(b"x" * 300, b"lost", qos=1, pid=3))
    sock.feed(publish_packet(TOPIC, b"kept"))
    assert link.wait(100) and link.wait(100)
    assert link.dropped == 1 and rec.messages == [(TOPIC, b"kept")]
    assert sock.sent() == b"\x40\x02\x00\x03"  # acked all the same: the broker must not resend it


def test_a_qos2_publish_is_refused():
    link, sock, rec = _link()
    sock.feed(publish_packet(TOPIC, b"x", qos=2, pid=1))
    with raises(mqtt.LinkDown):
        link.wait(100)
    assert rec.messages == []
