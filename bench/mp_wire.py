# bench/mp_wire.py: an MQTT broker and Jobs service inside MicroPython, behind stand-in socket
# and ssl modules, for the memory benchmark (bench/mp_chip.py). MIT licence.
"""The device's real transport (jobs.mqtt over umqtt.simple) talks MQTT 3.1.1 bytes to `Wire`,
which answers CONNECT, SUBSCRIBE, PINGREQ and QoS 1 PUBLISH as a broker does and hands each
PUBLISH to tests/device/fakejobs.FakeService; the service's answers come back as PUBLISH
packets. Nothing leaves the process: this is for runtimes without sockets or TLS (the wasm32
MicroPython) and for measuring the device alone.

    wire = install(FakeService(thing))   # sys.modules: socket, usocket, ssl -> stand-ins
    wire.deliver(service.create(...))    # notify-next etc. queued for the device to read

The TLS stand-in keeps nothing: on the chip mbedTLS parses the certificates into its own (IDF)
heap, outside the GC heap, so neither its memory nor a handshake's is in any figure here.
`wire.allocated` adds up what the stand-ins themselves allocated (the service's JSON, the
packets), so a caller can take it off the device's figure; on a runtime that does not collect
inside a call (wasm32) that sum is exact.
"""

import gc
import io
import json
import sys

_POLLIN = 1
_POLLOUT = 4
_MP_STREAM_POLL = 3


class _Counted:
    def __init__(self):
        self.allocated = 0


class Wire(_Counted):
    """The broker side of one connection at a time, and the service behind it."""

    def __init__(self, service):
        super().__init__()
        self.service = service
        self.sock = None
        self.connects = 0
        self.packets_in = 0

    def deliver(self, notes):
        """Queue (topic, body) pairs as PUBLISH packets to the connected device."""
        before = gc.mem_alloc()
        if self.sock is not None:
            for topic, body in notes:
                self.sock.queue_publish(topic, body)
        self.allocated += gc.mem_alloc() - before


class Socket(io.IOBase):
    """What jobs.mqtt uses of a socket: connect, non-blocking readinto/write, poll, close."""

    def __init__(self, wire):
        super().__init__()
        self.wire = wire
        self._in = bytearray()  # bytes from the device not yet parsed
        self._out = bytearray()  # bytes for the device
        self._pos = 0
        self.closed = False

    # the socket API ------------------------------------------------------------------------
    def settimeout(self, seconds):
        pass

    def setblocking(self, flag):
        pass

    def setsockopt(self, *args):
        pass

    def connect(self, addr):
        self.wire.sock = self
        self.wire.connects += 1

    def close(self):
        self.closed = True
        if self.wire.sock is self:
            self.wire.sock = None

    def ioctl(self, request, arg):
        if request != _MP_STREAM_POLL:
            return -22  # EINVAL: no file descriptor behind this stream
        ready = _POLLOUT
        if self._pos < len(self._out) or self.closed:
            ready |= _POLLIN
        return arg & ready

    def readinto(self, buf, n=-1):
        if self.closed:
            return 0
        left = len(self._out) - self._pos
        if not left:
            return None
        before = gc.mem_alloc()
        k = len(buf) if n < 0 else n
        k = min(k, left)
        buf[:k] = memoryview(self._out)[self._pos : self._pos + k]
        self._pos += k
        if self._pos == len(self._out):
            self._out = bytearray()  # drained: drop the grown buffer
            self._pos = 0
        self.wire.allocated += gc.mem_alloc() - before
        return k

    def write(self, data, off=0, n=-1):
        """All of data[off:off + n] (the stream method's offset form, or the whole of data)."""
        if self.closed:
            raise OSError(104)
        before = gc.mem_alloc()
        end = len(data) if n < 0 else off + n
        self._in.extend(memoryview(data)[off:end])
        self._parse()
        self.wire.allocated += gc.mem_alloc() - before
        return end - off

    # the broker --------------------------------------------------------------------------
    def _parse(self):
        data = self._in
        while len(data) >= 2:
            n, shift, i = 0, 0, 1
            while True:
                if i >= len(data):
                    return
                b = data[i]
                n |= (b & 0x7F) << shift
                i += 1
                if not b & 0x80:
                    break
                shift += 7
            if len(data) < i + n:
                return
            self._packet(data[0], bytes(data[i : i + n]))
            data = self._in = data[i + n :]

    def _packet(self, first, body):
        self.wire.packets_in += 1
        kind = first & 0xF0
        if kind == 0x10:  # CONNECT
            self._send(b"\x20\x02\x00\x00")
        elif kind == 0x80:  # SUBSCRIBE: granted QoS 1
            self._send(b"\x90\x03" + body[:2] + b"\x01")
        elif kind == 0xC0:  # PINGREQ
            self._send(b"\xd0\x00")
        elif kind == 0xE0:  # DISCONNECT
            self.close()
        elif kind == 0x30:  # PUBLISH
            tlen = body[0] << 8 | body[1]
            topic = body[2 : 2 + tlen].decode()
            at = 2 + tlen
            if (first >> 1) & 3:
                self._send(b"\x40\x02" + body[at : at + 2])
                at += 2
            for note in self.wire.service.answer(topic, body[at:]):
                self.queue_publish(*note)

    def queue_publish(self, topic, body):
        topic = topic.encode()
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        size = 2 + len(topic) + len(payload)
        head = bytearray(b"\x30")
        while True:
            b = size & 0x7F
            size >>= 7
            head.append(b | (0x80 if size else 0))
            if not size:
                break
        self._send(head + bytes((len(topic) >> 8, len(topic) & 0xFF)) + topic + payload)

    def _send(self, packet):
        self._out.extend(packet)


class _SocketModule(_Counted):
    AF_INET = 2
    SOCK_STREAM = 1
    IPPROTO_TCP = 6
    TCP_NODELAY = 1

    def __init__(self, wire):
        super().__init__()
        self._wire = wire

    def getaddrinfo(self, host, port, *args):
        return [(self.AF_INET, self.SOCK_STREAM, 0, "", ("127.0.0.1", port))]

    def socket(self, *args):
        return Socket(self._wire)


class _Context:
    """ssl.SSLContext as far as jobs.tls and jobs.mqtt use it; keeps no certificate (see above)."""

    def __init__(self, protocol=0):
        self.verify_mode = 0

    def load_verify_locations(self, cadata=None):
        pass

    def load_cert_chain(self, cert, key):
        pass

    def wrap_socket(self, sock, server_side=False, server_hostname=None, do_handshake_on_connect=True):
        return sock


class _SslModule:
    PROTOCOL_TLS_CLIENT = 0
    PROTOCOL_TLS_SERVER = 1
    CERT_NONE = 0
    CERT_OPTIONAL = 1
    CERT_REQUIRED = 2
    SSLContext = _Context

    @staticmethod
    def wrap_socket(sock, **kwargs):
        return sock


def install(service):
    """Put the stand-ins into sys.modules (before anything imports socket or ssl); the Wire."""
    wire = Wire(service)
    module = _SocketModule(wire)
    sys.modules["socket"] = sys.modules["usocket"] = module
    sys.modules["ssl"] = sys.modules["ussl"] = _SslModule()
    return wire
