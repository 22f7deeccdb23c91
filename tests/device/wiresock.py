# wiresock: a scripted socket and a recording handler for transport tests, in MicroPython. MIT licence.
"""A stand-in for a connected, non-blocking socket, as umqtt's own tests use an `io.BytesIO`.

    sock = WireSocket()
    sock.feed(b"\x20\x02\x00\x00")        # what the broker sends next (one segment)
    sock.stall()                          # the next read finds nothing (returns None), once
    link = MQTT(b"t", "127.0.0.1", 1883, 60, socket_factory=lambda: sock)
    link.connect()
    sock.sent()                           # every byte the transport wrote, as bytes

A read returns at most one segment (and at most `max_read` bytes), so segments are read
boundaries. `eof()` makes reads return 0 once the segments are used up. Writes are limited
by `max_write` and by `block_writes` (that many calls return None first). It derives from
`io.IOBase`, so the real `select.poll` polls it through `ioctl` (with no file descriptor the
Unix port asks `ioctl` every millisecond): readable when a segment or the end is waiting,
writable once `writable_at` (a ticks_ms value) has passed.
"""

import io
import time

_POLL = 3
_CLOSE = 4
_POLLIN = 1
_POLLOUT = 4
_EINVAL = 22


class WireSocket(io.IOBase):
    def __init__(self, max_read=0, max_write=0):
        self.segments = []
        self.max_read = max_read  # 0: no limit
        self.max_write = max_write
        self.block_writes = 0
        self.writable_at = None
        self.always_readable = False  # report POLLIN even with nothing to read (a TLS socket can)
        self.at_eof = False
        self.out = bytearray()
        self.closed = False
        self.blocking = []
        self.addr = None
        self.reads = 0
        self.writes = 0
        self.polls_in = 0  # polls that asked for POLLIN
        self.polls_out = 0  # polls that asked for POLLOUT

    # -- scripting ---------------------------------------------------------------------

    def feed(self, data):
        self.segments.append(memoryview(bytes(data)))

    def stall(self):
        self.segments.append(None)

    def eof(self):
        self.at_eof = True

    def sent(self, clear=True):
        out = bytes(self.out)
        if clear:
            self.out = bytearray()
        return out

    # -- the socket interface the transport uses ------------------------------------------

    def settimeout(self, t):
        pass

    def setsockopt(self, *args):
        pass

    def connect(self, addr):
        self.addr = addr
        self.closed = False  # the factory may hand out the same socket again

    def setblocking(self, flag):
        self.blocking.append(flag)

    def readinto(self, buf, nbytes=-1):
        if self.closed:
            raise OSError(9)
        self.reads += 1
        if not self.segments:
            return 0 if self.at_eof else None
        seg = self.segments[0]
        if seg is None:
            self.segments.pop(0)
            return None
        n = len(buf) if nbytes < 0 else min(nbytes, len(buf))
        n = min(n, len(seg))
        if self.max_read:
            n = min(n, self.max_read)
        buf[:n] = seg[:n]
        if n == len(seg):
            self.segments.pop(0)
        else:
            self.segments[0] = seg[n:]
        return n

    def write(self, buf, off=0, n=-1):
        if self.closed:
            raise OSError(9)
        self.writes += 1
        if self.block_writes:
            self.block_writes -= 1
            return None
        if self.writable_at is not None and time.ticks_diff(self.writable_at, time.ticks_ms()) > 0:
            return None
        mv = memoryview(buf)
        end = len(mv) if n < 0 else min(len(mv), off + n)
        if self.max_write:
            end = min(end, off + self.max_write)
        self.out.extend(mv[off:end])
        return end - off

    def close(self):
        self.closed = True

    def ioctl(self, request, arg):
        if request == _POLL:
            if arg & _POLLIN:
                self.polls_in += 1
            if arg & _POLLOUT:
                self.polls_out += 1
            ready = 0
            if arg & _POLLIN and (
                self.always_readable or self.at_eof or (self.segments and self.segments[0])
            ):
                ready |= _POLLIN
            if arg & _POLLOUT and (
                self.writable_at is None or time.ticks_diff(self.writable_at, time.ticks_ms()) <= 0
            ):
                ready |= _POLLOUT
            return ready
        if request == _CLOSE:
            self.closed = True
            return 0
        return -_EINVAL


class Recorder:
    """A transport handler that keeps what it was given."""

    def __init__(self):
        self.messages = []  # (topic, payload) as bytes
        self.large = None  # (topic, size) of the last streamed message
        self.chunks = []  # its chunk sizes
        self.ended = 0  # large_end() calls

    def message(self, topic, payload):
        self.messages.append((bytes(topic), bytes(payload)))

    def large_begin(self, topic, size):
        self.large = (bytes(topic), size)
        self.chunks = []

    def large_feed(self, chunk):
        self.chunks.append(len(chunk))

    def large_end(self):
        self.ended += 1


def packet(kind, body):
    """An MQTT packet: first byte `kind`, Remaining Length, `body`."""
    n = len(body)
    head = bytearray([kind])
    while True:
        b = n & 0x7F
        n >>= 7
        head.append(b | 0x80 if n else b)
        if not n:
            return bytes(head) + bytes(body)


def publish_packet(topic, payload, qos=0, pid=0, retain=False):
    body = bytearray([len(topic) >> 8, len(topic) & 0xFF]) + topic
    if qos:
        body += bytes([pid >> 8, pid & 0xFF])
    return packet(0x30 | qos << 1 | (1 if retain else 0), body + payload)
