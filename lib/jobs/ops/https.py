# jobs.ops.https: a small streaming HTTPS GET with a verified server. MIT licence.
"""HTTPS downloads for OTA: CERT_REQUIRED with a configured CA, SNI, Range, streaming readinto.

micropython-lib's `requests` turns certificate verification off for https; this does not.

    ctx = context(ca_der)                          # one per job, for all its connections
    n = download(url, ctx, size, write, offset=0)  # write(pos, mv) per 4 KiB block; bytes fetched

A dropped connection, a refused one or a TLS handshake that fails with OSError (ENOMEM, a
timeout, a reset) is retried with backoff, a download resumed with `Range: bytes=<pos>-` from
the last whole block. A certificate that does not verify (ValueError from the TLS wrap) or a
status other than 200/206 ends in DownloadError with the reason, at once.
"""

import gc
import socket
import ssl
import time

from micropython import const

from jobs import clock

BLOCK = const(4096)
_MAX_HEADER = const(1024)
_MAX_HEADERS = const(48)


class DownloadError(Exception):
    """args[0]: the reason, fit for statusDetails."""


class HandshakeError(OSError):
    """The TLS handshake failed for a reason worth a retry (memory, timeout, reset)."""


def context(ca):
    """A client SSLContext that requires a server certificate signed by the DER CA `ca`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=ca)
    return ctx


def parse_url(url):
    """(host, port, target) of an https:// URL; ValueError otherwise."""
    if not url.startswith("https://"):
        raise ValueError("https:// URL expected")
    rest = url[8:]
    slash = rest.find("/")
    if slash < 0:
        hostport, target = rest, "/"
    else:
        hostport, target = rest[:slash], rest[slash:]
    if "?" in hostport:
        hostport, target = hostport[: hostport.find("?")], "/" + hostport[hostport.find("?") :]
    port = 443
    if ":" in hostport:
        hostport, port_text = hostport.rsplit(":", 1)
        if not port_text.isdigit():
            raise ValueError("bad port in URL")
        port = int(port_text)
    if not hostport or "@" in hostport or " " in url:
        raise ValueError("bad host in URL")
    return hostport, port, target


class Response:
    """An open HTTPS response: status, body_start, total (or None), readinto(), close()."""

    def __init__(self, url, ctx, offset, timeout_ms):
        host, port, target = parse_url(url)
        self._raw = socket.socket()
        self._tls = None
        try:
            self._raw.settimeout(timeout_ms / 1000)
            self._raw.connect(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0][-1])
            gc.collect()  # the handshake's temporaries need the largest free blocks there are
            try:
                self._tls = ctx.wrap_socket(self._raw, server_hostname=host)
            except ValueError as error:  # the certificate check: no retry can change it
                raise DownloadError("TLS: " + host + " not verified (" + errno_text(error) + ")")
            except (OSError, MemoryError) as error:
                raise HandshakeError(errno_text(error) if isinstance(error, OSError) else "out of memory")
            request = "GET " + target + " HTTP/1.1\r\nHost: " + host + "\r\n"
            if offset:
                request += "Range: bytes=" + str(offset) + "-\r\n"
            self._tls.write((request + "User-Agent: jobs-ota\r\nConnection: close\r\n\r\n").encode())
            self._headers(offset)
        except BaseException:
            self.close()
            raise

    def _line(self):
        line = self._tls.readline(_MAX_HEADER)  # type: ignore[union-attr]
        if not line:
            raise OSError("connection closed in the headers")
        if not line.endswith(b"\n"):
            raise DownloadError("HTTP header line too long")
        return line.rstrip(b"\r\n")

    def _headers(self, offset):
        status = self._line().split(None, 2)
        if len(status) < 2 or not status[0].startswith(b"HTTP/") or not status[1].isdigit():
            raise DownloadError("not an HTTP response")
        self.status = int(status[1])
        self.length = None
        self.body_start = 0
        self.total = None
        for _ in range(_MAX_HEADERS):
            line = self._line()
            if not line:
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            value = value.strip()
            if name == b"content-length":
                self.length = int(value)
            elif name == b"content-range" and value.startswith(b"bytes "):
                span, _, total = value[6:].partition(b"/")
                self.body_start = int(span.split(b"-")[0])
                self.total = int(total) if total.isdigit() else None
            elif name == b"transfer-encoding" and value.lower() != b"identity":
                raise DownloadError("HTTP transfer encoding not supported")
        else:
            raise DownloadError("too many HTTP headers")
        if self.status == 200:
            self.total = self.length
        elif self.status != 206:
            raise DownloadError("HTTP " + str(self.status))

    def readinto(self, mv):
        return self._tls.readinto(mv)  # type: ignore[union-attr]

    def close(self):
        for s in (self._tls, self._raw):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        self._tls = None
        self._raw = None


def _fill(resp, mv):
    """Read until mv is full or the body ends; bytes read."""
    got = 0
    while got < len(mv):
        n = resp.readinto(mv[got:])
        if not n:
            break
        got += n
    return got


def download(
    url, ctx, size, write, offset=0, buf=None, timeout_ms=10000, wait=None, retries=4, backoff_ms=250
):
    """Fetch bytes [offset, size) of `url` over `ctx` (an SSLContext from context()), calling
    write(pos, mv) per block; returns bytes fetched.

    `offset` must be a multiple of BLOCK. write() may raise to stop (e.g. ops.Canceled).
    wait(pos, failures), if given, is called before each reconnection (feed a watchdog, report).
    """
    buf = buf if buf is not None else bytearray(BLOCK)
    mv = memoryview(buf)
    pos = offset
    fetched = 0
    failures = 0
    while pos < size:
        resp, failures = _open(url, ctx, pos, timeout_ms, failures, retries, wait, backoff_ms)
        try:
            if resp.total is not None and resp.total != size:
                has = str(resp.total)
                raise DownloadError("size mismatch: server has " + has + " bytes, expected " + str(size))
            skip = pos - resp.body_start  # a server that ignores Range sends from 0
            while skip > 0:
                n = resp.readinto(mv[: min(skip, BLOCK)])
                if not n:
                    break
                skip -= n
            while pos < size and skip <= 0:
                want = min(BLOCK, size - pos)
                n = _fill(resp, mv[:want])
                fetched += n
                if n < want:
                    break  # dropped: reconnect from this block
                write(pos, mv[:want])
                pos += want
                failures = 0
            if pos < size:
                try:
                    extra = resp.readinto(mv[:1])
                except OSError:
                    extra = 0
                if extra and resp.total is None:
                    raise DownloadError("size mismatch: server sent more than " + str(size) + " bytes")
        except OSError as error:
            failures += 1
            if failures > retries:
                raise DownloadError("connection lost at byte " + str(pos) + ": " + errno_text(error))
            _pause(wait, pos, failures, backoff_ms)
            continue
        finally:
            resp.close()
        if pos < size:
            failures += 1
            if failures > retries:
                raise DownloadError("connection lost at byte " + str(pos) + " of " + str(size))
            _pause(wait, pos, failures, backoff_ms)
    return fetched


def size(url, ctx, timeout_ms=10000, wait=None, retries=4, backoff_ms=250):
    """The size of url's body as the server gives it (None: not given), from one GET whose body
    is not read; a failed connection is retried as download() does."""
    resp = _open(url, ctx, 0, timeout_ms, 0, retries, wait, backoff_ms)[0]
    total = resp.total
    resp.close()
    return total


def _open(url, ctx, pos, timeout_ms, failures, retries, wait, backoff_ms):
    """(a Response from byte pos, failures so far): a failed connection is retried with backoff."""
    while True:
        try:
            return Response(url, ctx, pos, timeout_ms), failures
        except OSError as error:
            failures += 1
            if failures > retries:
                raise DownloadError(_unreachable(url, error))
            _pause(wait, pos, failures, backoff_ms)


def _pause(wait, pos, failures, backoff_ms):
    if wait is not None:
        wait(pos, failures)
    time.sleep_ms(clock.backoff_ms(failures - 1, backoff_ms, backoff_ms << 4))


def errno_text(error):
    """An exception's first argument as a reason: "errno 12", or its message."""
    code = error.args[0] if error.args else error
    return "errno " + str(code) if isinstance(code, int) else str(code)


def _unreachable(url, error):
    """The reason for a connection to url's server that failed with `error`."""
    host, port, _ = parse_url(url)
    where = host + ":" + str(port)
    if isinstance(error, HandshakeError):
        return "TLS handshake with " + where + " failed (" + errno_text(error) + ")"
    return "server unreachable: " + where + " (" + errno_text(error) + ")"
