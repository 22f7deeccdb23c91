# micropython: needs=broker
# Mutual TLS from MicroPython to a mosquitto broker started by the test session.
import socket
import time

from jobs import tls
from mptest import env, raises, read
from umqtt.simple import MQTTClient


def _identity(pki, thing):
    return read(pki + "/" + thing + ".cert.der"), read(pki + "/" + thing + ".key.der")


def _port():
    return int(env("MPTEST_BROKER_PORT"))


def _ca():
    return read(env("MPTEST_PKI") + "/ca.cert.der")


def _round_trip(client, thing):
    got = []
    client.set_callback(lambda topic, msg: got.append((topic, msg)))
    client.connect()
    topic = b"$aws/things/" + thing.encode() + b"/jobs/notify"
    client.subscribe(topic, qos=1)
    client.publish(topic, b'{"hello":1}', qos=1)
    deadline = time.ticks_add(time.ticks_ms(), 5000)
    while not got and time.ticks_diff(deadline, time.ticks_ms()) > 0:
        client.check_msg()
        time.sleep_ms(5)
    client.disconnect()
    assert got == [(topic, b'{"hello":1}')], got


def test_mutual_tls_rsa_device_certificate():
    cert, key = _identity(env("MPTEST_PKI"), "thing-rsa")
    client = tls.new_client(MQTTClient, b"thing-rsa", "localhost", _port(), 60, _ca(), cert, key)
    _round_trip(client, "thing-rsa")


def test_mutual_tls_ec_device_certificate():
    cert, key = _identity(env("MPTEST_PKI"), "thing-ec")
    client = tls.new_client(MQTTClient, b"thing-ec", "localhost", _port(), 60, _ca(), cert, key)
    _round_trip(client, "thing-ec")


def test_context_requires_a_verified_server():
    import ssl

    cert, key = _identity(env("MPTEST_PKI"), "thing-rsa")
    ctx = tls.context(_ca(), cert, key)
    assert ctx.verify_mode == ssl.CERT_REQUIRED


def test_new_client_serves_both_umqtt_generations():
    # >= 1.4.0 reads `ssl` (an SSLContext); 1.3.4 reads `ssl_params` for ussl.wrap_socket.
    import ssl

    cert, key = _identity(env("MPTEST_PKI"), "thing-rsa")
    client = tls.new_client(MQTTClient, b"thing-rsa", "localhost", _port(), 60, _ca(), cert, key)
    assert isinstance(client.ssl, ssl.SSLContext)
    assert client.ssl_params["cert_reqs"] == ssl.CERT_REQUIRED
    assert client.ssl_params["server_hostname"] == "localhost"
    assert client.ssl_params["cadata"] == _ca()


def _handshake(ctx, hostname):
    """What umqtt.simple >= 1.4.0 does in connect(): wrap with the context, SNI = host."""
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
