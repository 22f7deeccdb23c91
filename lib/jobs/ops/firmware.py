# jobs.ops.firmware: ota.firmware, a new MicroPython image into the next OTA partition. MIT licence.
"""ota.firmware {url, sha256, size, version}.

Streams the image over HTTPS in 4 KiB blocks into board.ota() (RAM use does not depend on the
image size), hashing as it goes; journals the offset every 64 KiB so a reset resumes with Range;
reads the slot back to verify; set_boot(); job.reboot(). On the new image resume() runs the
self-test (the engine is connected and job.progress(must=True) was accepted), marks it valid and reports
SUCCEEDED with the version. A reset before mark-valid boots the old image, whose resume()
reports FAILED "rolled back". Any failure before set_boot leaves the running firmware untouched.
"""

import binascii
import hashlib
import time

from micropython import const

from jobs import ops
from jobs.ops import https

_BLOCK = const(4096)
_CHECKPOINT_BYTES = const(65536)
_PROGRESS_MS = const(2000)
DOWNLOAD = "ota.download"
BOOT = "ota.boot"


def ca_for(job):
    """DER bytes of the CA that must have signed the download server's certificate:
    config https_ca, else the MQTT broker's CA (config ca)."""
    path = job.config.get("https_ca") or job.config.get("ca")
    if not path:
        raise ops.Failed("no CA for HTTPS downloads: set https_ca in config")
    if not path.startswith("/"):
        path = job.board.root.rstrip("/") + "/" + path
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        raise ops.Failed("https_ca " + path + " cannot be read")


def hexdigest(h):
    return binascii.hexlify(h.digest()).decode()


class Tracker:
    """Download bookkeeping shared by ota.firmware and file.download: call advanced(end) after
    each block is stored; it journals `phase` with data["offset"] every 64 KiB (after flush(),
    so the journal never runs ahead of what is stored) and reports progress every 2 s."""

    def __init__(self, job, phase, data, offset, size, flush=None):
        self.job = job
        self.phase = phase
        self.size = size
        self.data = data
        self.flush = flush
        self.saved = offset
        self.reported = time.ticks_ms()

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
            details = {"step": "downloading", "received": str(end), "size": str(self.size)}
            details["percent"] = str(end * 100 // self.size)
            if not job.progress(details):
                raise ops.Canceled()

    def retrying(self, pos, failures):
        """Before a reconnection: report (this also feeds the engine's watchdog)."""
        details = {"step": "downloading", "received": str(pos), "size": str(self.size)}
        details["retry"] = str(failures)
        if not self.job.progress(details):
            raise ops.Canceled()


class _SlotWriter(Tracker):
    """download() sink: whole blocks into the partition, SHA-256, journal and progress."""

    def __init__(self, job, slot, buf, hasher, offset):
        super().__init__(job, DOWNLOAD, {"slot": _label(slot), "offset": offset}, offset, job.doc["size"])
        self.slot = slot
        self.buf = buf
        self.hasher = hasher

    def __call__(self, pos, mv):
        n = len(mv)
        if n < _BLOCK:  # last block: erased-flash padding, outside the hash
            for i in range(n, _BLOCK):
                self.buf[i] = 0xFF
        self.slot.writeblocks(pos // _BLOCK, self.buf)
        self.hasher.update(mv)
        self.advanced(pos + n)


def _label(slot):
    return slot.info()[4]


def _hash_slot(slot, size, buf, hasher):
    """Feed bytes [0, size) of the slot to hasher, one block at a time."""
    mv = memoryview(buf)
    pos = 0
    while pos < size:
        slot.readblocks(pos // _BLOCK, buf)
        n = min(_BLOCK, size - pos)
        hasher.update(mv[:n])
        pos += n
    return hasher


def _spoil(slot, buf):
    """Overwrite the first block so a failed image can never pass set_boot()."""
    for i in range(_BLOCK):
        buf[i] = 0xFF
    try:
        slot.writeblocks(0, buf)
    except OSError:
        pass


class Firmware(ops.Op):
    name = "ota.firmware"
    params = (
        ops.Param("url", ops.URL),
        ops.Param("sha256", ops.SHA256),
        ops.Param("size", ops.INT, lo=1, hi=16 * 1024 * 1024),
        ops.Param("version", ops.STR, lo=1, hi=64),
    )

    def run(self, job):
        board = job.board
        version = job.doc["version"]
        if version == board.firmware_version():
            raise ops.Failed("version " + version + " already running")
        slot = board.ota()
        if slot is None:
            raise ops.Failed("no OTA partition on this device (flash an OTA build, e.g. ESP32_GENERIC-OTA)")
        capacity = slot.ioctl(4, 0) * slot.ioctl(5, 0)
        if job.doc["size"] > capacity:
            size = str(job.doc["size"])
            raise ops.Failed("image of " + size + " bytes exceeds the OTA partition (" + str(capacity) + ")")
        job.checkpoint(DOWNLOAD, {"slot": _label(slot), "offset": 0})
        return self._fetch(job, slot, 0)

    def _fetch(self, job, slot, offset):
        doc = job.doc
        size = doc["size"]
        buf = bytearray(_BLOCK)
        hasher = hashlib.sha256()
        if offset:
            _hash_slot(slot, offset, buf, hasher)
        ca = ca_for(job)
        if not job.progress({"step": "downloading", "received": str(offset), "size": str(size)}):
            raise ops.Canceled()
        writer = _SlotWriter(job, slot, buf, hasher, offset)
        try:
            https.download(
                doc["url"], ca, size, writer, offset, buf, timeout_ms=_timeout(job), wait=writer.retrying
            )
        except https.DownloadError as error:
            raise ops.Failed("download: " + str(error.args[0]))
        except ValueError as error:
            raise ops.Failed("url: " + str(error.args[0]))
        got = hexdigest(hasher)
        if got != doc["sha256"].lower():
            _spoil(slot, buf)
            raise ops.Failed("sha256 mismatch: image is " + got)
        if hexdigest(_hash_slot(slot, size, buf, hashlib.sha256())) != got:
            _spoil(slot, buf)
            raise ops.Failed("verify failed: the partition reads back different bytes")
        label = _label(slot)
        previous = job.board.firmware_version()
        job.checkpoint(BOOT, {"slot": label, "version": doc["version"], "previous": previous})
        job.board.record_version(label, doc["version"])
        try:
            slot.set_boot()
        except OSError as error:
            raise ops.Failed("image not bootable (set_boot: " + https._errno(error) + ")")
        job.reboot({"step": "rebooting", "version": doc["version"]})
        raise ops.Failed("reset did not happen")

    def resume(self, job):
        board = job.board
        data = job.data or {}
        if job.phase not in (DOWNLOAD, BOOT):
            return self.run(job)  # reset before our first checkpoint: nothing was written yet
        if job.phase == DOWNLOAD:
            slot = board.ota()
            if slot is None or _label(slot) != data.get("slot"):
                raise ops.Failed("OTA partition changed during the download")
            return self._fetch(job, slot, data.get("offset", 0))
        version = data.get("version")
        if board.running_slot() != data.get("slot") or board.firmware_version() != version:
            raise ops.Failed("rolled back")
        if board.boot_state() == "PENDING_VERIFY":
            # self-test: the engine is connected and the service accepted an update from this
            # image; anything else (rejected, no answer, canceled) resets into the old image
            if not job.progress({"step": "self-test", "version": version}, must=True):
                board.reset("ota self-test: update not accepted")
            board.mark_valid()
        return {"version": version, "previous": str(data.get("previous"))}


def _timeout(job):
    return job.config.get("https_timeout_ms") or 10000


ops.register(Firmware())
