# jobs.mqtt: MQTT 3.1.1 transport over umqtt.simple, with deadlines everywhere. MIT licence.
"""MQTT transport for the Jobs client: umqtt.simple's MQTTClient, adapted.

What it changes (see docs/engine.md):
* every read and write has a deadline: the socket is non-blocking after connect and waits go
  through `select.poll`, so umqtt's `setblocking(True)` (wait forever on ESP32) is never hit;
* the TLS handshake is driven by the same deadline loop (connect timeout);
* its own keepalive: PINGREQ when idle for keepalive/2, and a dead-link detector that drops
  the connection after 1.5 x keepalive without inbound traffic;
* incoming messages are read into one preallocated buffer (topic into a small one) with
  `readinto`; a payload larger than the buffer is streamed in buffer-sized chunks;
* each outgoing packet is assembled in a 1 KiB buffer and written at once (larger
  payloads: header, then payload);
* packet ids wrap 65535 -> 1 (never 0); QoS 1 publish/subscribe wait for their ack with a
  deadline; reconnect with exponential backoff and jitter, then resubscribe.

The message handler is an object with `message(topic, payload)` (memoryviews, valid only
during the call), `large_begin(topic, size)`, `large_feed(chunk)`, `large_end()`. It must
not do network I/O itself: it records, and the caller acts after `wait()` returns.
"""

import random
import select
import socket
import time

from micropython import const
from umqtt.simple import MQTTClient, MQTTException

_TOPIC_SIZE = const(256)
_TX_SIZE = const(1024)  # a request up to this size goes out in one write
_POLL_SLICE_MS = const(200)
_PINGREQ = b"\xc0\x00"
_DISCONNECT = b"\xe0\x00"


class LinkDown(OSError):
    """The connection is unusable (timeout, closed, dead link); reconnect."""


def _expired(deadline):
    return time.ticks_diff(deadline, time.ticks_ms()) <= 0


def _remaining(deadline):
    return max(0, time.ticks_diff(deadline, time.ticks_ms()))


def backoff_ms(attempt, lo, hi):
    """Exponential backoff from `lo` to `hi` with jitter: a value in [d/2, d]."""
    d = lo
    for _ in range(min(attempt, 24)):
        d *= 2
        if d >= hi:
            d = hi
            break
    half = d // 2
    return half + (random.getrandbits(20) % (d - half + 1))


class MQTT(MQTTClient):
    """An MQTTClient whose I/O never blocks past a deadline. Build with `jobs.tls.new_client`."""

    def setup(self, buffer_size=8192, connect_timeout_ms=10000, io_timeout_ms=10000):
        """Allocate the receive buffers and set the timeouts (once, before connect)."""
        self.buf = bytearray(buffer_size)
        self.mv = memoryview(self.buf)
        self._tbuf = bytearray(_TOPIC_SIZE)
        self._tmv = memoryview(self._tbuf)
        self._hbuf = bytearray(8)
        self._hmv = memoryview(self._hbuf)
        self._tx = bytearray(_TX_SIZE)
        self._txmv = memoryview(self._tx)
        self._first = self._hmv[0:1]  # views made once: the idle loop allocates nothing
        self._lenbyte = self._hmv[7:8]
        self.connect_timeout_ms = connect_timeout_ms
        self.io_timeout_ms = io_timeout_ms
        self.handler = None
        self._poller = select.poll()
        self._wait_pid = 0
        self._acked = False
        self._ack_code = 0
        self._connack = -1
        self._session = 0
        self.last_rx = self.last_tx = self.last_ping = time.ticks_ms()
        self.dropped = 0  # messages discarded (topic longer than the topic buffer)
        self.connects = 0
        self.connected = False
        return self

    def set_handler(self, handler):
        self.handler = handler

    # -- packet ids ---------------------------------------------------------------------

    def next_pid(self):
        """1..65535, wrapping 65535 -> 1 (0 is not a valid packet id)."""
        pid = self.pid + 1
        if pid > 65535:
            pid = 1
        self.pid = pid
        return pid

    # -- low-level I/O with deadlines -----------------------------------------------------

    def _write(self, data, n=-1, deadline=None):
        if self.sock is None:
            raise LinkDown("not connected")
        mv = memoryview(data)
        if n < 0:
            n = len(mv)
        off = 0
        if deadline is None:
            deadline = time.ticks_add(time.ticks_ms(), self.io_timeout_ms)
        while off < n:
            w = self.sock.write(mv[off:n])
            if w:
                off += w
                continue
            if _expired(deadline):
                raise LinkDown("write timed out")
            self._poller.poll(10)
        self.last_tx = time.ticks_ms()

    def _read(self, mv, n, deadline):
        """Fill mv[:n] before `deadline` or raise LinkDown."""
        got = 0
        sock = self.sock
        while got < n:
            r = sock.readinto(mv[got:n])
            if r is None:
                if _expired(deadline):
                    raise LinkDown("read timed out")
                self._poller.poll(min(_remaining(deadline), _POLL_SLICE_MS))
                continue
            if r == 0:
                raise LinkDown("connection closed by the broker")
            got += r
            self.last_rx = time.ticks_ms()

    def _skip(self, n, deadline):
        while n > 0:
            k = min(n, len(self.buf))
            self._read(self.mv, k, deadline)
            n -= k

    def _read_len(self, deadline):
        n = 0
        shift = 0
        one = self._lenbyte
        while True:
            self._read(one, 1, deadline)
            b = self._hbuf[7]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7
            if shift > 21:
                raise LinkDown("bad remaining length")

    def _keepalive(self):
        ka = self.keepalive
        if not ka or self.sock is None:
            return
        now = time.ticks_ms()
        if time.ticks_diff(now, self.last_rx) > ka * 1500:
            raise LinkDown("no traffic from the broker for 1.5 x keepalive")
        half = ka * 500
        if time.ticks_diff(now, self.last_tx) >= half or (
            time.ticks_diff(now, self.last_rx) >= half
            and time.ticks_diff(now, self.last_ping) >= half
        ):
            self.ping()

    # -- receiving ------------------------------------------------------------------------

    def _first_byte(self, deadline):
        """The first byte of the next packet, or -1 when `deadline` passes first."""
        one = self._first
        while True:
            self._keepalive()
            r = self.sock.readinto(one)
            if r:
                self.last_rx = time.ticks_ms()
                return self._hbuf[0]
            if r == 0:
                raise LinkDown("connection closed by the broker")
            if _expired(deadline):
                return -1
            wait = min(_remaining(deadline), _POLL_SLICE_MS)
            if self.keepalive:
                wait = min(wait, self.keepalive * 250)
            self._poller.poll(wait)

    def receive(self, deadline):
        """Handle one incoming packet if one starts before `deadline`; its type, or 0."""
        if self.sock is None:
            raise LinkDown("not connected")
        op = self._first_byte(deadline)
        if op < 0:
            return 0
        pkt_deadline = time.ticks_add(time.ticks_ms(), self.io_timeout_ms)
        size = self._read_len(pkt_deadline)
        kind = op & 0xF0
        h = self._hmv
        if kind == 0x30:
            self._publish_in(op, size, pkt_deadline)
        elif kind in (0x40, 0x90, 0xB0, 0x20) and 2 <= size <= 6:
            self._read(h, size, pkt_deadline)
            hb = self._hbuf
            if kind == 0x20:
                self._session = hb[0] & 1
                self._connack = hb[1]
            elif (hb[0] << 8 | hb[1]) == self._wait_pid:
                self._ack_code = hb[size - 1] if kind == 0x90 else 0
                self._acked = True
        else:  # PINGRESP and anything unexpected: consume the body
            self._skip(size, pkt_deadline)
        return kind

    def _publish_in(self, op, size, deadline):
        h = self._hmv
        self._read(h, 2, deadline)
        tlen = self._hbuf[0] << 8 | self._hbuf[1]
        size -= 2 + tlen
        keep = tlen <= _TOPIC_SIZE
        if keep:
            self._read(self._tmv, tlen, deadline)
        else:
            self._skip(tlen, deadline)
        qos = (op >> 1) & 3
        pid = 0
        if qos:
            self._read(h, 2, deadline)
            pid = self._hbuf[0] << 8 | self._hbuf[1]
            size -= 2
        if size < 0:
            raise LinkDown("malformed PUBLISH")
        handler = self.handler
        if not keep or handler is None:
            self.dropped += 1
            self._skip(size, deadline)
        elif size <= len(self.buf):
            self._read(self.mv, size, deadline)
            handler.message(self._tmv[:tlen], self.mv[:size])
        else:
            handler.large_begin(self._tmv[:tlen], size)
            left = size
            while left:
                k = min(left, len(self.buf))
                self._read(self.mv, k, deadline)
                handler.large_feed(self.mv[:k])
                left -= k
            handler.large_end()
        if qos == 1:
            hb = self._hbuf
            hb[0] = 0x40
            hb[1] = 2
            hb[2] = pid >> 8
            hb[3] = pid & 0xFF
            self._write(self._hmv, 4)

    def wait(self, ms):
        """Handle at most one packet, waiting up to `ms`; True when one was handled."""
        return self.receive(time.ticks_add(time.ticks_ms(), ms)) != 0

    def check_msg(self):
        # umqtt's check_msg/wait_msg would call sock.setblocking(True): never use them
        return self.wait(0)

    def wait_msg(self):
        return self.wait(self.io_timeout_ms)

    def _await_ack(self, pid, what):
        self._wait_pid = pid
        self._acked = False
        deadline = time.ticks_add(time.ticks_ms(), self.io_timeout_ms)
        while not self._acked:
            if not self.receive(deadline) and _expired(deadline):
                raise LinkDown("no " + what + " within the I/O timeout")
        self._wait_pid = 0

    # -- connecting -----------------------------------------------------------------------

    def connect(self, clean_session=True, timeout=None):
        """TCP + TLS + CONNECT/CONNACK, all within connect_timeout_ms. Session-present flag."""
        self.close()
        ms = self.connect_timeout_ms
        deadline = time.ticks_add(time.ticks_ms(), ms)
        addr = socket.getaddrinfo(self.server, self.port)[0][-1]
        raw = socket.socket()
        try:
            raw.settimeout(ms / 1000)
            try:
                # small packets in both directions: Nagle + delayed ACK would add ~40 ms each
                raw.setsockopt(getattr(socket, "IPPROTO_TCP", 6), getattr(socket, "TCP_NODELAY", 1), 1)
            except OSError:
                pass
            raw.connect(addr)
            sock = raw
            if self.ssl:
                # the handshake runs on the first write, inside our deadline loop
                sock = self.ssl.wrap_socket(
                    raw, server_hostname=self.server, do_handshake_on_connect=False
                )
            sock.setblocking(False)
        except Exception:
            raw.close()
            raise
        self.sock = sock
        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN)
        try:
            self._send_connect(clean_session, deadline)
            self._connack = -1
            self.last_rx = self.last_ping = time.ticks_ms()
            while self._connack < 0:
                if not self.receive(deadline) and _expired(deadline):
                    raise LinkDown("no CONNACK within the connect timeout")
        except ValueError as e:
            # MicroPython's ssl reports a failed certificate check (wrong host name, unknown
            # CA) as ValueError: a link failure like any other, retried with backoff
            self.close()
            raise LinkDown("TLS: " + " ".join(str(e).split()))
        except Exception:
            self.close()
            raise
        if self._connack:
            code = self._connack
            self.close()
            raise MQTTException(code)
        self.connected = True
        self.connects += 1
        return self._session

    def _send_connect(self, clean_session, deadline):
        cid = self.client_id
        if isinstance(cid, str):
            cid = cid.encode()
        ka = self.keepalive
        tx = self._tx
        tx[0] = 0x10
        i = self._put_len(1, 10 + 2 + len(cid))
        tx[i : i + 7] = b"\x00\x04MQTT\x04"
        tx[i + 7] = 2 if clean_session else 0
        tx[i + 8] = ka >> 8
        tx[i + 9] = ka & 0xFF
        i = self._put_str(i + 10, cid)
        self._write(self._txmv, i, deadline)  # drives the TLS handshake too

    def _put_len(self, i, n):
        """Remaining Length (variable byte integer) into the tx buffer at i; the next index."""
        tx = self._tx
        while n > 0x7F:
            tx[i] = (n & 0x7F) | 0x80
            n >>= 7
            i += 1
        tx[i] = n
        return i + 1

    def _put_str(self, i, s):
        """A length-prefixed string into the tx buffer at i; the next index."""
        n = len(s)
        if i + 2 + n > len(self._tx):
            raise ValueError("topic too long")
        tx = self._tx
        tx[i] = n >> 8
        tx[i + 1] = n & 0xFF
        tx[i + 2 : i + 2 + n] = s
        return i + 2 + n

    def close(self):
        """Drop the connection (no DISCONNECT)."""
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.connected = False

    def disconnect(self):
        try:
            if self.sock is not None:
                self._write(_DISCONNECT)
        except OSError:
            pass
        self.close()

    # -- sending --------------------------------------------------------------------------

    def ping(self):
        self._write(_PINGREQ)
        self.last_ping = time.ticks_ms()

    def publish(self, topic, msg, retain=False, qos=0):
        """Send PUBLISH; with qos=1 wait (bounded) for its PUBACK. Raises LinkDown.

        The packet is assembled in the tx buffer and written at once: separate small writes
        would each become a TLS record and meet Nagle + delayed ACK (about 40 ms each).
        """
        tx = self._tx
        tx[0] = 0x30 | qos << 1 | (1 if retain else 0)
        i = self._put_len(1, 2 + len(topic) + len(msg) + (2 if qos else 0))
        i = self._put_str(i, topic)
        pid = 0
        if qos:
            pid = self.next_pid()
            tx[i] = pid >> 8
            tx[i + 1] = pid & 0xFF
            i += 2
        n = len(msg)
        if i + n <= len(tx):
            tx[i : i + n] = msg
            self._write(self._txmv, i + n)
        else:
            self._write(self._txmv, i)
            self._write(msg)
        if qos == 1:
            self._await_ack(pid, "PUBACK")
        return pid

    def subscribe(self, topic, qos=1):
        """SUBSCRIBE one filter and wait (bounded) for its SUBACK; MQTTException if refused."""
        pid = self.next_pid()
        tx = self._tx
        tx[0] = 0x82
        i = self._put_len(1, 2 + 2 + len(topic) + 1)
        tx[i] = pid >> 8
        tx[i + 1] = pid & 0xFF
        i = self._put_str(i + 2, topic)
        tx[i] = qos
        self._write(self._txmv, i + 1)
        self._await_ack(pid, "SUBACK")
        if self._ack_code & 0x80:
            raise MQTTException(0x80)

    def unsubscribe(self, topic):
        """UNSUBSCRIBE one filter and wait (bounded) for its UNSUBACK."""
        pid = self.next_pid()
        tx = self._tx
        tx[0] = 0xA2
        i = self._put_len(1, 2 + 2 + len(topic))
        tx[i] = pid >> 8
        tx[i + 1] = pid & 0xFF
        i = self._put_str(i + 2, topic)
        self._write(self._txmv, i)
        self._await_ack(pid, "UNSUBACK")

    def open(self, subscriptions):
        """Connect and subscribe every filter (QoS 1)."""
        self.connect()
        for topic in subscriptions:
            self.subscribe(topic, 1)

    def reconnect(self, subscriptions, lo_ms, hi_ms, tries=0, idle=None):
        """Open the link, retrying with exponential backoff + jitter (bounded by hi_ms).

        `tries` = 0 retries for ever; `idle(ms)` sleeps (default time.sleep_ms) so a caller
        can feed a watchdog. Raises the last error when `tries` attempts failed.
        """
        attempt = 0
        while True:
            try:
                self.open(subscriptions)
                return
            except (OSError, MQTTException) as e:
                self.close()
                attempt += 1
                if tries and attempt >= tries:
                    raise
                ms = backoff_ms(attempt - 1, lo_ms, hi_ms)
                print("mqtt: connect failed (" + repr(e) + "), retry in", ms, "ms")
                if idle:
                    idle(ms)
                else:
                    time.sleep_ms(ms)
