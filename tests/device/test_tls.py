# micropython: needs=broker
# Mutual TLS from MicroPython to a mosquitto broker started by the test session.
import socket
import time

from jobs import mqtt, tls
from mptest import env, raises, read


def _identity(pki, thing):
    return read(pki + "/" + thing + ".cert.der"), read(pki + "/" + thing + ".key.der")


def _port():
    return int(env("MPTEST_BROKER_PORT"))


def _ca():
    return read(env("MPTEST_PKI") + "/ca.cert.der")


class _Got:
    def __init__(self):
        self.messages = []

    def message(self, topic, payload):
        self.messages.append((bytes(topic), bytes(payload)))


def _round_trip(thing):
    cert, key = _identity(env("MPTEST_PKI"), thing)
    client = mqtt.MQTT(thing, "localhost", _port(), 60, ssl=tls.context(_ca(), cert, key))
    got = _Got()
    client.set_handler(got)
    topic = b"$aws/things/" + thing.encode() + b"/jobs/notify"
    client.open([topic])
    client.publish(topic, b'{"hello":1}', qos=1)
    deadline = time.ticks_add(time.ticks_ms(), 5000)
    while not got.messages and time.ticks_diff(deadline, time.ticks_ms()) > 0:
        client.wait(100)
    client.disconnect()
    assert got.messages == [(topic, b'{"hello":1}')], got.messages


def test_mutual_tls_rsa_device_certificate():
    _round_trip("thing-rsa")


def test_mutual_tls_ec_device_certificate():
    _round_trip("thing-ec")


def test_context_requires_a_verified_server():
    import ssl

    cert, key = _identity(env("MPTEST_PKI"), "thing-rsa")
    ctx = tls.context(_ca(), cert, key)
    assert ctx.verify_mode == ssl.CERT_REQUIRED


def _holds(obj, needle, seen):
    """Whether `needle` (bytes) is reachable from `obj` through attributes and containers."""
    if isinstance(obj, (bytes, bytearray)):
        return obj == needle
    if id(obj) in seen or isinstance(obj, (int, float, str, bool, memoryview)) or obj is None:
        return False
    seen.add(id(obj))
    if isinstance(obj, dict):
        items = list(obj.keys()) + list(obj.values())
    elif isinstance(obj, (list, tuple)):
        items = obj
    else:
        items = list(getattr(obj, "__dict__", {}).values())
    return any(_holds(item, needle, seen) for item in items)


class _Board:
    root = "/"


def test_the_built_engine_keeps_no_certificate_or_key_bytes():
    # parsed into the SSLContext, then left to the collector: about 2.5 KB not held for ever
    import gc

    from jobs import config, engine

    pki = env("MPTEST_PKI")
    names = (pki + "/ca.cert.der", pki + "/thing-rsa.cert.der", pki + "/thing-rsa.key.der")
    raw = {"endpoint": "localhost", "port": _port(), "thing_name": "thing-rsa", "telemetry_interval_s": 0}
    raw.update({"ca": names[0], "cert": names[1], "key": names[2], "journal": "/tmp/mptest-tls-journal.json"})
    cfg = config.validate(raw)
    engine.build(cfg, _Board(), log=lambda *a: None)  # imports done before measuring
    gc.collect()
    before = gc.mem_alloc()
    eng = engine.build(cfg, _Board(), log=lambda *a: None)
    gc.collect()
    print("engine.build holds", gc.mem_alloc() - before, "bytes")
    for name in names:
        assert not _holds(eng, read(name), set()), name
    eng.link.open(eng.client.topics.subscriptions())  # and the context still works
    eng.link.disconnect()


def _handshake(ctx, hostname):
    """A blocking handshake with the context and SNI = `hostname`, then CONNECT/CONNACK."""
    sock = socket.socket()
    sock.connect(socket.getaddrinfo("127.0.0.1", _port())[0][-1])
    try:
        tls_sock = ctx.wrap_socket(sock, server_hostname=hostname)
        # MQTT CONNECT for client id "thing-rsa"; a CONNACK proves the broker accepted us.
        tls_sock.write(b"\x10\x15\x00\x04MQTT\x04\x02\x00\x3c\x00\x09thing-rsa")
        return tls_sock.read(4)
    finally:
        sock.close()


def test_sslcontext_path_connects_with_the_right_host_name():
    cert, key = _identity(env("MPTEST_PKI"), "thing-rsa")
    assert _handshake(tls.context(_ca(), cert, key), "localhost") == b"\x20\x02\x00\x00"


def test_refused_when_the_server_host_name_is_wrong():
    cert, key = _identity(env("MPTEST_PKI"), "thing-rsa")
    with raises(OSError, ValueError):
        _handshake(tls.context(_ca(), cert, key), "not-the-broker.example")


def test_refused_when_the_ca_is_not_the_servers():
    cert, key = _identity(env("MPTEST_PKI"), "thing-rsa")
    other_ca = read(env("MPTEST_OTHER_PKI") + "/ca.cert.der")
    with raises(OSError, ValueError):
        _handshake(tls.context(other_ca, cert, key), "localhost")


def test_refused_when_the_client_certificate_is_from_another_ca():
    cert, key = _identity(env("MPTEST_OTHER_PKI"), "thing-rsa")
    with raises(OSError, ValueError):
        answer = _handshake(tls.context(_ca(), cert, key), "localhost")
        if not answer:
            raise OSError("connection closed by the broker")


def test_refused_without_a_client_certificate():
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=_ca())
    with raises(OSError, ValueError):
        answer = _handshake(ctx, "localhost")
        if not answer:
            raise OSError("connection closed by the broker")
