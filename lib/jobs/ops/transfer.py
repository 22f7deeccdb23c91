# jobs.ops.transfer: the HTTPS transfer every download operation shares. MIT licence.
"""What ota.firmware, ota.files and file.download share to fetch over HTTPS.

    with transfer.Session(job) as session:      # CA and timeout from the config, one SSLContext
        session.download(url, size, write, offset, buf, wait)   # ops.Failed("download: ...")
        session.size(url)                         # the server's size, for a document without one
    tracker = transfer.Tracker(job, phase, data, offset, size)  # journal every 64 KiB, progress
    transfer.hexdigest(hasher)

A session closes the MQTT connection before it connects (`job.release_link()`) when config
`https_close_mqtt` says so, by default on a board without PSRAM (`board.psram` false): two TLS
sessions at once are more than the IDF heap of such a chip holds. Writing files (the path rule,
free space, .part and rename) is jobs.ops.staging's, which ota.firmware does not load.
"""

import binascii
import gc
import time

from micropython import const

from jobs import ops, store
from jobs.ops import https

BLOCK = const(4096)
_CHECKPOINT_BYTES = const(65536)
_PROGRESS_MS = const(2000)
_TIMEOUT_MS = const(10000)


class Session:
    """One job's downloads: the CA read once, one SSLContext for every connection, the MQTT
    link released when configured. close() (or the end of a `with`) drops the context."""

    def __init__(self, job):
        self.job = job
        self.timeout_ms = job.config.get("https_timeout_ms") or _TIMEOUT_MS
        self._ca = _ca(job)
        self._ctx = None
        close = job.config.get("https_close_mqtt")
        self._release = (not getattr(job.board, "psram", False)) if close is None else close

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._ctx = None
        self._ca = None
        gc.collect()

    def _context(self):
        if self._release:
            self.job.release_link()  # before each download: a progress(must=True) may have reconnected
        if self._ctx is None:
            self._ctx = https.context(self._ca)
        return self._ctx

    def download(self, url, size, write, offset=0, buf=None, wait=None):
        """https.download of bytes [offset, size) of url with this session; ops.Failed on failure."""
        try:
            return https.download(url, self._context(), size, write, offset, buf, self.timeout_ms, wait)
        except https.DownloadError as error:
            raise ops.Failed("download: " + str(error.args[0]))

    def size(self, url):
        """The size the server gives for url (None: not given), for documents without one."""
        try:
            return https.size(url, self._context(), self.timeout_ms, self._retrying)
        except https.DownloadError as error:
            raise ops.Failed("download: " + str(error.args[0]))

    def _retrying(self, pos, failures):
        if not self.job.progress({"step": "connecting", "retry": str(failures)}):
            raise ops.Canceled()


def _ca(job):
    """DER bytes of the CA that must have signed the download server's certificate:
    config https_ca, else the MQTT broker's CA (config ca)."""
    path = job.config.get("https_ca") or job.config.get("ca")
    if not path:
        raise ops.Failed("no CA for HTTPS downloads: set https_ca in config")
    path = store.join(job.board.root, path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        raise ops.Failed("https_ca " + path + " cannot be read")


def hexdigest(hasher):
    return binascii.hexlify(hasher.digest()).decode()


class Tracker:
    """Download bookkeeping: call advanced(end) after each block is stored; it journals `phase`
    with data["offset"] every 64 KiB (after flush(), so the journal never runs ahead of what is
    stored) and reports progress every 2 s: `details(end)` (default: step, received, size,
    percent)."""

    def __init__(self, job, phase, data, offset, size, flush=None, details=None):
        self.job = job
        self.phase = phase
        self.size = size
        self.data = data
        self.flush = flush
        self.saved = offset
        self.reported = time.ticks_ms()
        if details is not None:
            self.details = details

    def details(self, end):
        details = {"step": "downloading", "received": str(end), "size": str(self.size)}
        details["percent"] = str(end * 100 // self.size) if self.size else "100"
        return details

    def advanced(self, end):
        job = self.job
        if end - self.saved >= _CHECKPOINT_BYTES:
            if self.flush is not None:
                self.flush()
            self.saved = end
            self.data["offset"] = end
            job.checkpoint(self.phase, self.data)
        if time.ticks_diff(time.ticks_ms(), self.reported) >= _PROGRESS_MS:
            self.reported = time.ticks_ms()
            if not job.progress(self.details(end)):
                raise ops.Canceled()

    def retrying(self, pos, failures):
        """Before a reconnection: report (this also feeds the engine's watchdog)."""
        details = self.details(pos)
        details["retry"] = str(failures)
        if not self.job.progress(details):
            raise ops.Canceled()
