# jobs.mqtt: MQTT 3.1.1 client transport with a deadline on every wait. MIT licence.
"""MQTT 3.1.1 transport for the Jobs client; no wait is unbounded, nothing is allocated per byte.

    link = MQTT(thing, endpoint, 8883, 60, ssl=tls.context(ca, cert, key))
    link.set_handler(client)                        # see "Handler" below
    link.reconnect(subscriptions, 1000, 120000, idle=sleep_and_feed)
    link.publish(topic, payload, qos=1)             # returns once its PUBACK is in
    link.wait(ms)                                   # handles at most one incoming packet

Its own class, not a subclass of umqtt.simple's MQTTClient: every umqtt method does
blocking I/O (`wait_msg` even calls `setblocking(True)`, which on the ESP32 means "wait for
ever"), allocates per message, and lets the packet id reach 0; overriding them all left only
inherited methods that did not work here. What is reused is umqtt's `MQTTException`, raised
for a refused CONNECT (its return code) or SUBSCRIBE (0x80), so code that catches umqtt's
exception keeps working; umqtt.simple is frozen into every ESP32 firmware, so importing it
costs no RAM there.

* Every read and write has a deadline: the socket is non-blocking after the TCP connect and
  waits go through `select.poll` (`ipoll`, which allocates nothing): POLLIN when reading,
  POLLOUT when a write cannot proceed (a TLS socket with decrypted data buffered reports
  POLLIN at once, so waiting for POLLIN there would spin).
* `connect` is bounded by `connect_timeout_ms`: the TCP connect by the socket timeout, the
  TLS handshake (run by the first write) and the CONNACK by the deadline loop. DNS
  (`getaddrinfo`) blocks as long as the port's resolver does; MicroPython cannot bound it.
  A failed handshake closes the raw socket too (the TLS object drops it on failure).
* Keepalive: PINGREQ when nothing was sent, or nothing received, for keepalive/2; no inbound
  byte for 1.5 x keepalive raises `LinkDown`. Checked at every wait, also for acks.
* Receiving: one preallocated buffer (`buffer_size`), the topic in a 256-byte one, filled
  with `readinto`; a payload larger than the buffer is streamed in buffer-sized chunks.
  QoS 1 messages are answered with PUBACK. QoS 2 is not supported (subscribe with 0 or 1).
* Sending: each packet is assembled in a 1 KiB buffer and written at once (a larger payload:
  header, then payload), with TCP_NODELAY: small packets never wait for a delayed ACK.
* Packet ids 1..65535, 65535 wraps to 1 (never 0). PUBACK, SUBACK and UNSUBACK are awaited
  for `io_timeout_ms` at most; once a packet has started, the rest of it must arrive within
  `io_timeout_ms` too.

Handler: an object with `message(topic, payload)` (memoryviews, valid only during the call),
`large_begin(topic, size)`, `large_feed(chunk)`, `large_end()`. It must not do network I/O
itself: it records, and the caller acts after `wait()` returns.
"""

import select
import socket
import time

from micropython import const
from umqtt.simple import MQTTException

from jobs import clock

_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBSCRIBE = const(0x82)  # SUBSCRIBE and UNSUBSCRIBE carry the fixed flags 0b0010
_SUBACK = const(0x90)
_UNSUBSCRIBE = const(0xA2)
_UNSUBACK = const(0xB0)
_PINGREQ = const(0xC0)
_PINGRESP = const(0xD0)
_DISCONNECT = const(0xE0)

_POLLIN = const(1)  # select.POLLIN and POLLOUT on every port
_POLLOUT = const(4)
_TOPIC_SIZE = const(256)
_TX_SIZE = const(1024)  # a request up to this size goes out in one write
_POLL_SLICE_MS = const(200)
_MAX_LENGTH = const(268435455)  # the largest Remaining Length (four bytes)


class LinkDown(OSError):
    """The connection is unusable (timeout, closed, dead link, failed connect); reconnect."""


def _expired(deadline):
    return time.ticks_diff(deadline, time.ticks_ms()) <= 0


def _remaining(deadline):
    return max(0, time.ticks_diff(deadline, time.ticks_ms()))


def _ack_name(kind):
    return "PUBACK" if kind == _PUBACK else "SUBACK" if kind == _SUBACK else "UNSUBACK"


def _cause(e):
    """A one-line reason for a failed connect or subscribe, as the reconnect log prints it."""
    if isinstance(e, MQTTException):  # the codes: docs/engine.md
        code = e.args[0] if e.args else 0
        return "SUBSCRIBE refused, SUBACK 0x80" if code == 0x80 else "CONNECT refused, CONNACK " + str(code)
    return " ".join(str(e).split()) or type(e).__name__


class MQTT:
    """One MQTT 3.1.1 connection to `server:port`, as client `client_id`, reopened on demand.

    `ssl`: an SSLContext (`jobs.tls.context`) or None for plain TCP. `socket_factory()`
    returns a new unconnected socket (default `socket.socket`; tests pass a scripted one).
    `log(line)` receives the reconnect lines (default print). Attributes: `connected`,
    `connects` (successful connects), `dropped` (messages discarded: topic over 256 bytes
    or no handler), `pid` (the last packet id used), `last_rx`, `last_tx`, `last_ping`
    (ticks_ms of the last byte received, packet sent, PINGREQ).
    """

    def __init__(
        self,
        client_id,
        server,
        port,
        keepalive,
        ssl=None,
        socket_factory=None,
        buffer_size=8192,
        connect_timeout_ms=10000,
        io_timeout_ms=10000,
        log=print,
    ):
        self.client_id = client_id.encode() if isinstance(client_id, str) else client_id
        self.server = server
        self.port = port
        self.keepalive = keepalive
        self.ssl = ssl
        self._new_socket = socket_factory or socket.socket
        self.connect_timeout_ms = connect_timeout_ms
        self.io_timeout_ms = io_timeout_ms
        self._log = log
        self._buf = bytearray(buffer_size)
        self._mv = memoryview(self._buf)
        self._tbuf = bytearray(_TOPIC_SIZE)
        self._tmv = memoryview(self._tbuf)
        self._hbuf = bytearray(8)  # packet headers and acks, in and out
        self._hmv = memoryview(self._hbuf)
        self._first = self._hmv[0:1]  # views made once: waiting and reading allocate none
        self._lenbyte = self._hmv[7:8]
        self._tx = bytearray(_TX_SIZE)
        self._ctl = bytearray(2)  # PINGREQ, DISCONNECT
        self._sock = None
        self._raw = None  # the TCP socket under the TLS one: closed by us, see close()
        self._poller = select.poll()
        self.handler = None
        self.pid = 0
        self._wait_kind = 0
        self._wait_pid = 0
        self._acked = False
        self._ack_code = 0
        self._connack = -1
        self._session = 0
        self.last_rx = self.last_tx = self.last_ping = time.ticks_ms()
        self.dropped = 0
        self.connects = 0
        self.connected = False

    def set_handler(self, handler):
        self.handler = handler

    # -- connecting -----------------------------------------------------------------------

    def connect(self, clean_session=True):
        """TCP (+ TLS) + CONNECT/CONNACK within connect_timeout_ms; the session-present flag.

        Raises `LinkDown("<step>: <cause>")` (step DNS, TCP, TLS or MQTT) when the link
        cannot be opened, `MQTTException(code)` when the broker refuses the CONNECT.
        """
        self.close()
        ms = self.connect_timeout_ms
        deadline = time.ticks_add(time.ticks_ms(), ms)
        step = "DNS"
        try:
            addr = socket.getaddrinfo(self.server, self.port)[0][-1]
            step = "TCP"
            raw = self._raw = self._new_socket()
            raw.settimeout(ms / 1000)  # bounds the blocking TCP connect
            try:
                # small packets both ways: Nagle + delayed ACK would add ~40 ms to each
                raw.setsockopt(getattr(socket, "IPPROTO_TCP", 6), getattr(socket, "TCP_NODELAY", 1), 1)
            except OSError:
                pass
            raw.connect(addr)
            sock = raw
            if self.ssl:
                step = "TLS"  # the handshake runs in the first write, inside our deadline
                sock = self.ssl.wrap_socket(raw, server_hostname=self.server, do_handshake_on_connect=False)
            sock.setblocking(False)
            self._sock = sock
            self._poller = select.poll()
            self._poller.register(sock, _POLLIN)
            self._send_connect(clean_session, deadline)
            step = "MQTT"
            self._connack = -1
            self.last_rx = self.last_ping = time.ticks_ms()
            while True:
                self._receive(deadline)
                if self._connack >= 0:
                    break
                if _expired(deadline):
                    raise LinkDown("no CONNACK")
        except Exception as e:
            self.close()
            if not isinstance(e, (OSError, ValueError)):
                raise
            # a failed certificate check (wrong CA, wrong host name) is a ValueError
            if isinstance(e, LinkDown) and _expired(deadline):
                why = "no answer within " + str(ms) + " ms"
            else:
                why = _cause(e)
            if step == "MQTT" and why.startswith("connection closed"):
                why += " before CONNACK (certificate or policy refused?)"
            raise LinkDown(step + ": " + why)
        if self._connack:
            code = self._connack
            self.close()
            raise MQTTException(code)
        self.connected = True
        self.connects += 1
        return self._session

    def _send_connect(self, clean_session, deadline):
        cid = self.client_id
        ka = self.keepalive
        tx = self._tx
        tx[0] = _CONNECT
        i = self._put_len(1, 10 + 2 + len(cid))
        tx[i : i + 7] = b"\x00\x04MQTT\x04"
        tx[i + 7] = 2 if clean_session else 0
        tx[i + 8] = ka >> 8
        tx[i + 9] = ka & 0xFF
        i = self._put_str(i + 10, cid)
        self._write(tx, i, deadline)

    def open(self, subscriptions, idle=None):
        """Connect and subscribe every filter (QoS 1); idle(0) after each step (a watchdog)."""
        self.connect()
        for topic in subscriptions:
            if idle is not None:
                idle(0)
            self.subscribe(topic, 1)

    def reconnect(self, subscriptions, lo_ms, hi_ms, tries=0, idle=None):
        """`open` until it succeeds, backing off from lo_ms to hi_ms with jitter.

        `tries` = 0 tries for ever, else the last error is raised after that many failures.
        Between tries it calls `idle(ms)` (default time.sleep_ms), and `idle(0)` between the
        steps of a try, so a caller can feed a watchdog. One try takes at most DNS +
        connect_timeout_ms + one io_timeout_ms per subscription.
        """
        attempt = 0
        while True:
            try:
                self.open(subscriptions, idle)
                return
            except (OSError, MQTTException) as e:
                self.close()
                attempt += 1
                if tries and attempt >= tries:
                    raise
                ms = clock.backoff_ms(attempt - 1, lo_ms, hi_ms)
                where = "%s:%d" % (self.server, self.port)
                self._log("mqtt: connect to %s failed (%s), retry in %d ms" % (where, _cause(e), ms))
                (idle or time.sleep_ms)(ms)

    def close(self):
        """Drop the connection (no DISCONNECT). Closes the raw socket too: after a failed
        handshake the TLS object no longer holds it, and its descriptor would leak."""
        sock = self._sock
        raw = self._raw
        self._sock = self._raw = None
        self.connected = False
        for s in (sock, raw):  # closing a socket twice does nothing
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass

    def disconnect(self):
        """Send DISCONNECT (if the link is up) and close."""
        if self._sock is not None:
            try:
                c = self._ctl
                c[0] = _DISCONNECT
                self._write(c, 2)
            except OSError:
                pass
        self.close()

    # -- sending --------------------------------------------------------------------------

    def ping(self):
        c = self._ctl
        c[0] = _PINGREQ
        self._write(c, 2)
        self.last_ping = time.ticks_ms()

    def publish(self, topic, msg, retain=False, qos=0):
        """Send PUBLISH (topic and msg: bytes); with qos=1 wait for its PUBACK. Its packet
        id (0 for QoS 0). Raises LinkDown."""
        if qos < 0 or qos > 1:
            raise ValueError("QoS 0 or 1")
        tx = self._tx
        n = len(msg)
        tx[0] = _PUBLISH | qos << 1 | (1 if retain else 0)
        i = self._put_len(1, 2 + len(topic) + n + (2 if qos else 0))
        i = self._put_str(i, topic)
        pid = 0
        if qos:
            pid = self._next_pid()
            tx[i] = pid >> 8
            tx[i + 1] = pid & 0xFF
            i += 2
        if i + n <= _TX_SIZE:
            tx[i : i + n] = msg
            self._write(tx, i + n)
        else:
            self._write(tx, i)
            self._write(msg, n)
        if qos:
            self._await_ack(_PUBACK, pid)
        return pid

    def subscribe(self, topic, qos=1):
        """SUBSCRIBE one filter and wait for its SUBACK; MQTTException(0x80) if refused."""
        if qos < 0 or qos > 1:
            raise ValueError("QoS 0 or 1")
        i = self._put_request(_SUBSCRIBE, topic, 1)
        self._tx[i] = qos
        self._write(self._tx, i + 1)
        self._await_ack(_SUBACK, self.pid)
        if self._ack_code & 0x80:
            raise MQTTException(0x80)

    def unsubscribe(self, topic):
        """UNSUBSCRIBE one filter and wait for its UNSUBACK."""
        i = self._put_request(_UNSUBSCRIBE, topic, 0)
        self._write(self._tx, i)
        self._await_ack(_UNSUBACK, self.pid)

    def _put_request(self, kind, topic, extra):
        """Fixed header, a new packet id and the topic of a (UN)SUBSCRIBE; the next index."""
        pid = self._next_pid()
        tx = self._tx
        tx[0] = kind
        i = self._put_len(1, 2 + 2 + len(topic) + extra)
        tx[i] = pid >> 8
        tx[i + 1] = pid & 0xFF
        return self._put_str(i + 2, topic)

    def _next_pid(self):
        pid = self.pid + 1
        if pid > 65535:
            pid = 1
        self.pid = pid
        return pid

    def _put_len(self, i, n):
        """Remaining Length (variable byte integer) into the tx buffer at i; the next index."""
        if n > _MAX_LENGTH:
            raise ValueError("packet too large")
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
        if i + 2 + n > _TX_SIZE:
            raise ValueError("topic too long")
        tx = self._tx
        tx[i] = n >> 8
        tx[i + 1] = n & 0xFF
        tx[i + 2 : i + 2 + n] = s
        return i + 2 + n

    def _write(self, buf, n, deadline=None):
        """Write buf[:n] before `deadline` (default: io_timeout_ms from the first stall).

        `write(buf, off, max_len)` is the stream method's offset form (the ESP32 stubs only
        know `write(buf)`): a partial write goes on without slicing a new memoryview.
        """
        sock = self._sock
        if sock is None:
            raise LinkDown("not connected")
        off = 0
        while off < n:
            w = sock.write(buf, off, n - off)  # pyright: ignore[reportCallIssue]
            if w:
                off += w
                continue
            if deadline is None:
                deadline = time.ticks_add(time.ticks_ms(), self.io_timeout_ms)
            elif _expired(deadline):
                raise LinkDown("write timed out")
            poller = self._poller
            poller.modify(sock, _POLLOUT)
            poller.ipoll(min(_remaining(deadline), _POLL_SLICE_MS))
            poller.modify(sock, _POLLIN)
        self.last_tx = time.ticks_ms()

    # -- receiving ------------------------------------------------------------------------

    def wait(self, ms):
        """Handle at most one incoming packet, waiting up to `ms`; True when one was handled."""
        return self._receive(time.ticks_add(time.ticks_ms(), ms))

    def _await_ack(self, kind, pid):
        self._wait_kind = kind
        self._wait_pid = pid
        self._acked = False
        deadline = time.ticks_add(time.ticks_ms(), self.io_timeout_ms)
        while True:
            self._receive(deadline)
            if self._acked:
                break
            if _expired(deadline):  # also while other packets keep coming
                self._wait_kind = 0
                raise LinkDown("no " + _ack_name(kind) + " within " + str(self.io_timeout_ms) + " ms")
        self._wait_kind = 0

    def _receive(self, deadline):
        """Handle one packet if one starts before `deadline`; True when one was handled."""
        sock = self._sock
        if sock is None:
            raise LinkDown("not connected")
        op = self._first_byte(sock, deadline)
        if op < 0:
            return False
        pkt_deadline = time.ticks_add(time.ticks_ms(), self.io_timeout_ms)
        size = self._read_len(pkt_deadline)
        kind = op & 0xF0
        if kind == _PUBLISH:
            self._publish_in(op, size, pkt_deadline)
        elif kind == _CONNACK and size == 2:
            hb = self._hbuf
            self._read(self._hmv, 2, pkt_deadline)
            self._session = hb[0] & 1
            self._connack = hb[1]
        elif (kind == _PUBACK or kind == _SUBACK or kind == _UNSUBACK) and 2 <= size <= 6:
            hb = self._hbuf
            self._read(self._hmv, size, pkt_deadline)
            if kind == self._wait_kind and (hb[0] << 8 | hb[1]) == self._wait_pid:
                if kind == _SUBACK:
                    self._ack_code = hb[2] if size > 2 else 0x80
                self._acked = True
        else:  # PINGRESP and anything unexpected: consume the body
            self._skip(size, pkt_deadline)
        self.last_rx = time.ticks_ms()
        return True

    def _first_byte(self, sock, deadline):
        """The first byte of the next packet, or -1 when `deadline` passes first."""
        while True:
            self._keepalive()
            r = sock.readinto(self._first)
            if r:
                self.last_rx = time.ticks_ms()
                return self._hbuf[0]
            if r == 0:
                raise LinkDown("connection closed by the broker")
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                return -1
            if left > _POLL_SLICE_MS:
                left = _POLL_SLICE_MS
            ka = self.keepalive
            if ka and left > ka * 250:
                left = ka * 250
            self._poller.ipoll(left)

    def _keepalive(self):
        ka = self.keepalive
        if not ka:
            return
        now = time.ticks_ms()
        if time.ticks_diff(now, self.last_rx) > ka * 1500:
            raise LinkDown("no traffic from the broker for 1.5 x keepalive")
        half = ka * 500
        if time.ticks_diff(now, self.last_tx) >= half or (
            time.ticks_diff(now, self.last_rx) >= half and time.ticks_diff(now, self.last_ping) >= half
        ):
            self.ping()

    def _read(self, mv, n, deadline):
        """Fill mv[:n] before `deadline` or raise LinkDown."""
        sock = self._sock
        if sock is None:
            raise LinkDown("not connected")
        got = 0
        while got < n:
            r = sock.readinto(mv, n) if got == 0 else sock.readinto(mv[got:n])
            if r is None:
                if _expired(deadline):
                    raise LinkDown("read timed out")
                self._poller.ipoll(min(_remaining(deadline), _POLL_SLICE_MS))
                continue
            if r == 0:
                raise LinkDown("connection closed by the broker")
            got += r

    def _skip(self, n, deadline):
        size = len(self._buf)
        while n > 0:
            k = n if n < size else size
            self._read(self._mv, k, deadline)
            n -= k

    def _read_len(self, deadline):
        n = 0
        shift = 0
        hb = self._hbuf
        one = self._lenbyte
        while True:
            self._read(one, 1, deadline)
            b = hb[7]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7
            if shift > 21:
                raise LinkDown("bad remaining length")

    def _publish_in(self, op, size, deadline):
        h = self._hmv
        hb = self._hbuf
        self._read(h, 2, deadline)
        tlen = hb[0] << 8 | hb[1]
        size -= 2 + tlen
        keep = tlen <= _TOPIC_SIZE
        if keep:
            self._read(self._tmv, tlen, deadline)
        else:
            self._skip(tlen, deadline)
        qos = (op >> 1) & 3
        pid = 0
        if qos:
            if qos > 1:
                raise LinkDown("PUBLISH with QoS " + str(qos) + " (subscribed with 1 at most)")
            self._read(h, 2, deadline)
            pid = hb[0] << 8 | hb[1]
            size -= 2
        if size < 0:
            raise LinkDown("malformed PUBLISH")
        handler = self.handler
        buf_size = len(self._buf)
        if not keep or handler is None:
            self.dropped += 1
            self._skip(size, deadline)
        elif size <= buf_size:
            self._read(self._mv, size, deadline)
            handler.message(self._tmv[:tlen], self._mv[:size])
        else:
            handler.large_begin(self._tmv[:tlen], size)
            left = size
            while left:
                k = left if left < buf_size else buf_size
                self._read(self._mv, k, deadline)
                handler.large_feed(self._mv[:k])
                left -= k
            handler.large_end()
        if qos:
            hb[0] = _PUBACK
            hb[1] = 2
            hb[2] = pid >> 8
            hb[3] = pid & 0xFF
            self._write(hb, 4)
