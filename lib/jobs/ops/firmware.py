# jobs.ops.firmware: ota.firmware, a new MicroPython image into the next OTA partition. MIT licence.
"""ota.firmware {url, sha256, size, version}.

Streams the image over HTTPS in 4 KiB blocks into board.ota() (RAM use does not depend on the
image size), hashing as it goes; journals the offset every 64 KiB so a reset resumes with Range;
reads the slot back to verify; set_boot(); job.reboot(). On the new image resume() runs the
self-test (the engine is connected and job.progress(must=True) was accepted), marks it valid and reports
SUCCEEDED with the version. A reset before mark-valid boots the old image, whose resume()
reports FAILED "rolled back". Any failure before set_boot leaves the running firmware untouched.
"""

import hashlib

from micropython import const

from jobs import ops
from jobs.ops import https, transfer

_BLOCK = const(4096)
_MAX_IMAGE = const(16 * 1024 * 1024)
DOWNLOAD = "ota.download"
BOOT = "ota.boot"


class _SlotWriter(transfer.Tracker):
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
        ops.Param("size", ops.INT, lo=1, hi=_MAX_IMAGE),
        ops.Param("version", ops.STR, lo=1, hi=64),
    )

    def check(self, doc, board):
        # the partition table is fixed for this device: no retry of this document can fit
        slot = board.ota()
        if slot is None:
            return "no OTA partition on this device (flash an OTA build, e.g. ESP32_GENERIC-OTA)"
        capacity = slot.ioctl(4, 0) * slot.ioctl(5, 0)
        if doc["size"] > capacity:
            return "image of " + str(doc["size"]) + " bytes exceeds the OTA partition (" + str(capacity) + ")"
        return None

    def run(self, job):
        board = job.board
        version = job.doc["version"]
        if version == board.firmware_version():
            raise ops.Failed("version " + version + " already running")
        slot = board.ota()
        job.checkpoint(DOWNLOAD, {"slot": _label(slot), "offset": 0})
        return self._fetch(job, slot, 0)

    def _fetch(self, job, slot, offset):
        doc = job.doc
        size = doc["size"]
        buf = bytearray(_BLOCK)
        hasher = hashlib.sha256()
        if offset:
            _hash_slot(slot, offset, buf, hasher)
        with transfer.Session(job) as session:
            if not job.progress({"step": "downloading", "received": str(offset), "size": str(size)}):
                raise ops.Canceled()
            writer = _SlotWriter(job, slot, buf, hasher, offset)
            session.download(doc["url"], size, writer, offset, buf, writer.retrying)
        got = transfer.hexdigest(hasher)
        if got != doc["sha256"].lower():
            _spoil(slot, buf)
            raise ops.Failed("sha256 mismatch: image is " + got)
        if transfer.hexdigest(_hash_slot(slot, size, buf, hashlib.sha256())) != got:
            _spoil(slot, buf)
            raise ops.Failed("verify failed: the partition reads back different bytes")
        label = _label(slot)
        previous = job.board.firmware_version()
        job.checkpoint(BOOT, {"slot": label, "version": doc["version"], "previous": previous})
        job.board.record_version(label, doc["version"])
        try:
            slot.set_boot()
        except OSError as error:
            raise ops.Failed("image not bootable (set_boot: " + https.errno_text(error) + ")")
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


OPS = (Firmware(),)
