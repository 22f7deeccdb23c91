# jobs.ops.stream: MQTT-based file delivery (AWS IoT streams) over the device's own link. MIT licence.
"""One file of an AWS IoT stream, fetched over the MQTT connection the device already has (no
second TLS session), block by block into a sink:

    sink = stream.SlotSink(slot)                   # an OTA partition, or stream.FileSink(path)
    dl = stream.Download(job, "AFR_OTA-…", 0, size, sink, "afr.stream")
    digest = dl.run()                              # SHA-256 of the whole file; ops.Failed / Canceled

The topics are the thing's own (`$aws/things/<thing>/streams/<id>/...`, JSON): DescribeStream
once (the file must be there with the size the job document gives; its stream version is then
sent with every request, so a stream changed mid-way answers VersionMismatch), then GetStream
for a window of missing blocks at a time (`o` the first missing block, `n` the count, `b` the
bitmap of the missing ones). Config `ota_block_size` sets the block size. Each data message is
parsed where the transport received it, its base64 decoded in place in the transport's buffer
(no allocation per block), the block written to the sink at once and hashed in file order (a
block that arrives early is hashed from the sink when the gap before it fills). Blocks still
missing when nothing more comes are asked again with backoff (jobs.clock); a lost link is
reconnected and the stream topics subscribed again. The bitmap of the blocks stored is
journaled (job.checkpoint) every 64 KiB after the sink is flushed, so a reset resumes without
fetching again a block that was journaled. IN_PROGRESS statusDetails are AWS's OTA agent's:
`{"receive": "<blocks received>/<blocks>"}`, at the engine's progress rate.

The Jobs client routes the stream's topics here (`client.on_stream`) only while it runs; the
three topics (data, description, rejected) are subscribed for the download and unsubscribed
after it.
"""

import binascii
import hashlib
import time

from micropython import const

from jobs import clock, config, ops
from jobs.afrdoc import Invalid, Reader
from jobs.client import bytes_at

_SECTOR = const(4096)  # flash erase unit of an ESP32 partition
_PER_REQUEST = const(131072)  # most bytes of blocks AWS answers for one GetStream
_WINDOW = const(32768)  # bytes of blocks asked for at a time
_CHECKPOINT = const(65536)
_STALLS = const(8)  # requests answered by nothing in a row before the download gives up
_SLICE_MS = const(200)
_RETRY = ("InternalError", "Throttled", "ThrottlingException", "RequestThrottled")

_B64 = bytearray(b"\xff" * 256)
for _i, _c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"):
    _B64[_c] = _i
del _i, _c


def decode_in_place(buf, start, end):
    """Decode the base64 text buf[start:end] into buf[start:] (the output never overtakes the
    input); the number of bytes, or -1 when it is not base64."""
    t = _B64
    while end > start and buf[end - 1] == 61:  # "=" padding
        end -= 1
    i = j = start
    full = start + (end - start) // 4 * 4
    while i < full:
        a = t[buf[i]]
        b = t[buf[i + 1]]
        c = t[buf[i + 2]]
        d = t[buf[i + 3]]
        if (a | b | c | d) > 63:
            return -1
        v = a << 18 | b << 12 | c << 6 | d
        buf[j] = v >> 16
        buf[j + 1] = v >> 8 & 255
        buf[j + 2] = v & 255
        i += 4
        j += 3
    rest = end - i
    if rest:
        if rest == 1:
            return -1
        a = t[buf[i]]
        b = t[buf[i + 1]]
        c = t[buf[i + 2]] if rest == 3 else 0
        if (a | b | c) > 63:
            return -1
        v = a << 18 | b << 12 | c << 6
        buf[j] = v >> 16
        j += 1
        if rest == 3:
            buf[j] = v >> 8 & 255
            j += 1
    return j - start


class SlotSink:
    """Blocks into an OTA partition (esp32.Partition protocol): a 4 KiB sector is erased when
    its first block comes, then each block written at its offset."""

    def __init__(self, slot):
        self.slot = slot

    def write(self, index, mv, dl):
        block = dl.block
        pos = index * block
        first = pos // _SECTOR
        last = (pos + len(mv) - 1) // _SECTOR
        per = _SECTOR // block
        for sector in range(first, last + 1):
            if per > 1 and dl.stored_any(sector * per, sector * per + per):
                continue  # a block of it is already there: erasing would lose it
            self.slot.ioctl(6, sector)
        self.slot.writeblocks(first, mv, pos - first * _SECTOR)

    def read(self, index, mv, dl):
        pos = index * dl.block
        self.slot.readblocks(pos // _SECTOR, mv, pos % _SECTOR)

    def flush(self):
        pass  # partition writes are on the flash when writeblocks returns

    def close(self):
        pass


class FileSink:
    """Blocks into a file at their offsets; resume=True keeps what it holds."""

    def __init__(self, path, resume=False):
        f = None
        if resume:
            try:
                f = open(path, "r+b")
            except OSError:
                pass
        self.file = f or open(path, "w+b")

    def write(self, index, mv, dl):
        self.file.seek(index * dl.block)
        self.file.write(mv)

    def read(self, index, mv, dl):
        self.file.seek(index * dl.block)
        got = self.file.readinto(mv) or 0
        if got < len(mv):
            raise OSError("stored block " + str(index) + " is short")

    def flush(self):
        self.file.flush()

    def close(self):
        self.file.close()


class Download:
    """One stream file (see the module docstring). `phase`: the journal phase checkpointed with
    `data` + {"stream", "file", "block", "version", "bitmap"}; a job reset in that phase with the
    same stream, file and block size resumes from the journaled bitmap."""

    def __init__(self, job, stream_id, file_id, size, sink, phase, data=None):
        self.job = job
        self.stream_id = stream_id
        self.file_id = file_id
        self.size = size
        self.sink = sink
        self.phase = phase
        cfg = job.config
        block = self.block = config.ota_block_size(cfg)
        self.count = max(1, (size + block - 1) // block)
        self.last = size - (self.count - 1) * block  # bytes of the last block
        self.data = data if data is not None else {}
        self.have = bytearray((self.count + 7) // 8)
        self.version = None
        self.received = 0
        self.error = None
        self.fetched = 0  # blocks taken from the stream in this run (duplicates not counted)
        self.hasher = hashlib.sha256()
        self.hashed = 0  # blocks [0, hashed) are in the hasher
        self._rbuf = None
        self._token = ""
        self._base = b""
        self._window = (0, 0)
        self._waiting = 0  # blocks of the last request not here yet
        self._described = False
        self._subscribed = -1  # link.connects when the stream topics were subscribed
        self._saved = 0
        self._resume(job)

    # -- the bitmap ---------------------------------------------------------------------------

    def stored(self, index):
        return self.have[index >> 3] >> (index & 7) & 1

    def stored_any(self, lo, hi):
        for k in range(lo, min(hi, self.count)):
            if self.stored(k):
                return True
        return False

    def _resume(self, job):
        d = job.data or {}
        if job.phase != self.phase or d.get("stream") != self.stream_id or d.get("file") != self.file_id:
            return
        if d.get("block") != self.block or not isinstance(d.get("bitmap"), str):
            return
        try:
            have = binascii.unhexlify(d["bitmap"])
        except ValueError:
            return
        if len(have) != len(self.have):
            return
        self.have[:] = have
        self.version = d.get("version")
        for k in range(self.count):
            if self.stored(k):
                self.received += 1
        self._saved = self.received
        try:
            self._hash_stored()
        except OSError:  # the sink lost what the journal says it holds: start again
            self.have[:] = bytes(len(self.have))
            self.received = self._saved = self.hashed = 0
            self.hasher = hashlib.sha256()

    def _hash_stored(self):
        """Feed the hasher every stored block that follows what it holds, read back from the sink."""
        while self.hashed < self.count and self.stored(self.hashed):
            k = self.hashed
            n = self.last if k == self.count - 1 else self.block
            if self._rbuf is None:
                self._rbuf = bytearray(self.block)
            mv = memoryview(self._rbuf)[:n]
            self.sink.read(k, mv, self)
            self.hasher.update(mv)
            self.hashed = k + 1

    # -- topics -------------------------------------------------------------------------------

    def _topics(self, client):
        base = b"$aws/things/" + client.topics.thing_name + b"/streams/" + self.stream_id.encode() + b"/"
        self._base = base
        return base + b"data/json", base + b"description/json", base + b"rejected/json"

    def _link(self):
        """The connected link, with the stream topics subscribed on this connection."""
        link, client = self.job.mqtt()
        if self._subscribed != link.connects:
            for topic in self._topics(client):
                link.subscribe(topic, 0)
            self._subscribed = link.connects
        return link

    # -- the download ---------------------------------------------------------------------------

    def run(self):
        """Fetch every missing block; the SHA-256 of the whole file (bytes)."""
        link, client = self.job.mqtt()
        self._token = "ota-" + client.tokens.boot_id
        self._topics(client)
        client.on_stream = self.message
        try:
            self._fetch(client)
        finally:
            client.on_stream = None
            self._unsubscribe(link, client)
        self._hash_stored()
        if self.hashed != self.count:
            raise ops.Failed("stream " + self.stream_id + ": block " + str(self.hashed) + " missing")
        self.job.progress(self._details())
        return self.hasher.digest()

    def _unsubscribe(self, link, client):
        if not link.connected or self._subscribed != link.connects:
            return
        try:
            for topic in self._topics(client):
                link.unsubscribe(topic)
        except OSError:
            link.close()  # the engine reconnects with its own subscriptions only

    def _fetch(self, client):
        stalls = 0
        while not self._described or self.received < self.count:
            try:
                link = self._link()
                before = self.received
                self._ask(link)
                self._await(link)
            except OSError as error:  # the link dropped: reconnect, subscribe, ask again
                client.log("stream:", self.stream_id, "link lost (" + str(error) + ")")
                client.link.close()
                continue
            if self.error is not None:
                raise ops.Failed(self.error)
            self._checkpoint()
            if self.received > before or (self._described and self._waiting == 0):
                stalls = 0
                continue
            stalls += 1
            if stalls > _STALLS:
                what = "no description" if not self._described else "blocks missing from " + str(self._first())
                raise ops.Failed("stream " + self.stream_id + ": " + what + " after " + str(stalls) + " requests")
            cfg = self.job.config
            ms = clock.backoff_ms(stalls - 1, cfg["retry_base_ms"], cfg["reconnect_max_ms"])
            client.log("stream:", self.stream_id, "no answer; asking again in", ms, "ms")
            client.pump(ms)

    def _ask(self, link):
        """Publish DescribeStream (once) or GetStream for the next window of missing blocks."""
        c = b'{"c":"' + self._token.encode() + b'"'
        if not self._described:
            link.publish(self._base + b"describe/json", c + b"}", qos=0)
            return
        first = self._first()
        span = min(max(1, _WINDOW // self.block), max(1, _PER_REQUEST // self.block), self.count - first)
        bits = bytearray((span + 7) // 8)
        waiting = 0
        for k in range(span):
            if not self.stored(first + k):
                bits[k >> 3] |= 1 << (k & 7)
                waiting += 1
        self._window = (first, first + span)
        self._waiting = waiting
        body = c + b',"f":' + str(self.file_id).encode() + b',"l":' + str(self.block).encode()
        if self.version is not None:
            body += b',"s":' + str(self.version).encode()
        body += b',"o":' + str(first).encode() + b',"n":' + str(span).encode()
        link.publish(self._base + b"get/json", body + b',"b":"' + binascii.hexlify(bytes(bits)) + b'"}', qos=0)

    def _await(self, link):
        """Handle what comes until the request is answered or the request timeout passes."""
        job = self.job
        deadline = time.ticks_add(time.ticks_ms(), job.config["request_timeout_ms"])
        while self.error is None and not (self._described and self._waiting == 0):
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                return
            link.wait(min(left, _SLICE_MS))
            # also what the engine needs while a job runs: cancellation seen, watchdog fed,
            # IN_PROGRESS at its rate (this handles up to 16 more messages)
            if not job.progress(self._details()):
                raise ops.Canceled()
            if not link.connected:
                raise OSError("link lost")

    def _first(self):
        k = self.hashed
        while k < self.count and self.stored(k):
            k += 1
        return k

    def _details(self):
        return {"receive": str(self.received) + "/" + str(self.count)}

    def _checkpoint(self):
        if (self.received - self._saved) * self.block < _CHECKPOINT and self.received < self.count:
            return
        if self.received == self._saved:
            return
        self.sink.flush()  # the journal never runs ahead of what is stored
        self._saved = self.received
        data = self.data
        data["stream"] = self.stream_id
        data["file"] = self.file_id
        data["block"] = self.block
        data["version"] = self.version
        data["bitmap"] = binascii.hexlify(bytes(self.have)).decode()
        self.job.checkpoint(self.phase, data)

    # -- the client's stream handler ---------------------------------------------------------------

    def message(self, topic, payload):
        """client.on_stream: True when `topic` is this stream's (payload None: larger than the
        transport's buffer)."""
        base = self._base
        if not bytes_at(topic, 0, base):
            return False
        n = len(base)
        try:
            if payload is None:
                self.error = "stream " + self.stream_id + ": a message larger than buffer_size"
            elif _is(topic, n, b"data/json"):
                self._block(payload)
            elif _is(topic, n, b"rejected/json"):
                self._rejected(payload)
            elif _is(topic, n, b"description/json"):
                self._description(payload)
        except Invalid:
            pass  # not readable: what it answered is asked for again
        return True

    def _description(self, payload):
        r = Reader(payload)
        r.take(123)
        version = size = None
        while r.more(125):
            key = r.key()
            if key == "s":
                version = r.integer(65535, "s")
            elif key == "r":
                r.take(91)
                while r.more(93):
                    found = _file_size(r, self.file_id)
                    if found is not None:
                        size = found
            else:
                r.skip()
        if size is None:
            self.error = "stream " + self.stream_id + " has no file " + str(self.file_id)
        elif size != self.size:
            self.error = "stream " + self.stream_id + " file " + str(self.file_id) + " has " + str(size)
            self.error += " bytes, the job document says " + str(self.size)
        elif self.version is not None and version != self.version:
            self.error = "stream " + self.stream_id + " changed since the download began (version "
            self.error += str(self.version) + " -> " + str(version) + ")"
        self.version = version
        self._described = True

    def _rejected(self, payload):
        r = Reader(payload)
        code = message = token = None
        r.take(123)
        while r.more(125):
            key = r.key()
            if key in ("o", "m", "c") and not r.null():
                value = r.string(256, key)
                if key == "o":
                    code = value
                elif key == "m":
                    message = value
                else:
                    token = value
            else:
                r.skip()
        if token is not None and token != self._token:
            return  # an answer to an earlier download
        if code in _RETRY:
            return  # asked again after the timeout, with backoff
        self.error = "stream " + self.stream_id + ": " + str(code) + ": " + str(message or "")[:128]

    def _block(self, buf):
        r = Reader(buf)
        r.take(123)
        index = file_id = length = -1
        start = end = -1
        while r.more(125):
            key = r.key()
            if key == "p":
                start, end = self._payload(r, index)
            elif key == "i":
                index = r.integer(self.count, "i")
            elif key == "f":
                file_id = r.integer(255, "f")
            elif key == "l":
                length = r.integer(self.block, "l")
            else:
                r.skip()
        if file_id != self.file_id or not 0 <= index < self.count or start < 0:
            return
        want = self.last if index == self.count - 1 else self.block
        if length != want or self.stored(index):
            return  # another file's, a wrong size, or a duplicate
        n = decode_in_place(buf, start, end)
        if n != want:
            return
        mv = buf[start : start + n]
        self.sink.write(index, mv, self)
        self.have[index >> 3] |= 1 << (index & 7)
        self.received += 1
        self.fetched += 1
        lo, hi = self._window
        if lo <= index < hi and self._waiting:
            self._waiting -= 1
        if index == self.hashed:
            self.hasher.update(mv)
            self.hashed += 1
            self._hash_stored()

    def _payload(self, r, index):
        """(start, end) of the base64 text of "p". Its length follows from the block's size, so
        the 5 KiB of it are not walked byte by byte: the end is checked where it must be."""
        buf = r.buf
        if r.ws() != 34:
            raise Invalid("p: string expected")
        start = r.pos + 1
        if 0 <= index < self.count:
            sizes = (self.last if index == self.count - 1 else self.block,)
        else:
            sizes = (self.last, self.block) if self.last < self.block else (self.block,)
        for n in sizes:  # shortest first: a longer guess could land on a later quote
            end = start + (n + 2) // 3 * 4
            if end < r.end and buf[end] == 34:
                r.pos = end + 1
                return start, end
        start, end, plain = r._string()  # not where it should end: walk it
        if not plain:
            end = _drop_escapes(buf, start, end)
        return start, end


def _is(topic, n, suffix):
    return len(topic) - n == len(suffix) and bytes_at(topic, n, suffix)


def _drop_escapes(buf, start, end):
    """Remove the backslashes of `\\/` escapes in place; the new end."""
    j = start
    i = start
    while i < end:
        c = buf[i]
        if c == 92:
            i += 1
            c = buf[i]
        buf[j] = c
        i += 1
        j += 1
    return j


def _file_size(r, file_id):
    """The "z" of a DescribeStream file entry {"f", "z"} when its "f" is file_id, else None."""
    r.take(123)
    f = z = None
    while r.more(125):
        key = r.key()
        if key == "f":
            f = r.integer(255, "f")
        elif key == "z":
            z = r.integer(0x7FFFFFFF, "z")
        else:
            r.skip()
    return z if f == file_id else None
