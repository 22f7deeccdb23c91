# jobs.ops.firmware: ota.firmware, a new MicroPython image into the next OTA partition. MIT licence.
"""ota.firmware {url, sha256, size, version}.

Streams the image over HTTPS in 4 KiB blocks into board.ota() (RAM use does not depend on the
image size), hashing as it goes; journals the offset every 64 KiB so a reset resumes with Range;
reads the slot back to verify; set_boot(); job.reboot(). On the new image resume() runs the
self-test (the engine is connected and job.progress(must=True) was accepted), marks it valid and reports
SUCCEEDED with the version. A reset before mark-valid boots the old image, whose resume()
reports FAILED "rolled back". Any failure before set_boot leaves the running firmware untouched.

The steps are functions afr_ota (jobs.ops.afr) shares: slot_problem(), https_into(), verify(),
install() and self_test().
"""

import binascii
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

    def __init__(self, job, slot, buf, hasher, offset, size, phase, data, details):
        data["slot"] = label(slot)
        data["offset"] = offset
        super().__init__(job, phase, data, offset, size, details=details)
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


def label(slot):
    return slot.info()[4]


def hash_slot(slot, size, buf, hasher):
    """Feed bytes [0, size) of the slot to hasher, one block at a time."""
    mv = memoryview(buf)
    pos = 0
    while pos < size:
        slot.readblocks(pos // _BLOCK, buf)
        n = min(_BLOCK, size - pos)
        hasher.update(mv[:n])
        pos += n
    return hasher


def spoil(slot, buf):
    """Overwrite the first block so a failed image can never pass set_boot()."""
    for i in range(_BLOCK):
        buf[i] = 0xFF
    try:
        slot.writeblocks(0, buf)
    except OSError:
        pass


def slot_problem(board, size):
    """Why an image of `size` bytes can never be installed here (REJECTED), or None: the
    partition table is fixed for this device, so no retry of the document can fit."""
    slot = board.ota()
    if slot is None:
        return "no OTA partition on this device (flash an OTA build, e.g. ESP32_GENERIC-OTA)"
    capacity = slot.ioctl(4, 0) * slot.ioctl(5, 0)
    if size > capacity:
        return "image of " + str(size) + " bytes exceeds the OTA partition (" + str(capacity) + ")"
    return None


def https_into(job, slot, url, size, offset, buf, phase, data, details=None):
    """Bytes [offset, size) of `url` into the slot over HTTPS (the bytes before `offset`, already
    there, are hashed from the slot first); journals `phase` with data + {"slot", "offset"}
    every 64 KiB. The hasher of the whole image."""
    hasher = hashlib.sha256()
    if offset:
        hash_slot(slot, offset, buf, hasher)
    with transfer.Session(job) as session:
        writer = _SlotWriter(job, slot, buf, hasher, offset, size, phase, data, details)
        if not job.progress(writer.details(offset)):
            raise ops.Canceled()
        session.download(url, size, writer, offset, buf, writer.retrying)
    return hasher


def verify(slot, size, digest, buf):
    """Read the slot back: its SHA-256 must be `digest`; else the image is spoiled, ops.Failed."""
    if hash_slot(slot, size, buf, hashlib.sha256()).digest() != digest:
        spoil(slot, buf)
        raise ops.Failed("verify failed: the partition reads back different bytes")


def install(job, slot, version, details):
    """Journal BOOT, record the version, set_boot() and reboot with `details` (never returns)."""
    board = job.board
    name = label(slot)
    job.checkpoint(BOOT, {"slot": name, "version": version, "previous": board.firmware_version()})
    board.record_version(name, version)
    try:
        slot.set_boot()
    except OSError as error:
        raise ops.Failed("image not bootable (set_boot: " + https.errno_text(error) + ")")
    job.reboot(details)
    raise ops.Failed("reset did not happen")


def self_test(job, details):
    """After the reboot of install(): ops.Failed("rolled back") when the old image runs, else the
    self-test (update `details` accepted, or a reset into the old image) and mark-valid;
    (version, previous)."""
    board = job.board
    data = job.data or {}
    version = data.get("version")
    if board.running_slot() != data.get("slot") or board.firmware_version() != version:
        raise ops.Failed("rolled back")
    if board.boot_state() == "PENDING_VERIFY":
        # the engine is connected and the service accepted an update from this image; anything
        # else (rejected, no answer, canceled) resets into the old image
        if not job.progress(details, must=True):
            board.reset("ota self-test: update not accepted")
        board.mark_valid()
    return version, str(data.get("previous"))


class Firmware(ops.Op):
    name = "ota.firmware"
    params = (
        ops.Param("url", ops.URL),
        ops.Param("sha256", ops.SHA256),
        ops.Param("size", ops.INT, lo=1, hi=_MAX_IMAGE),
        ops.Param("version", ops.STR, lo=1, hi=64),
    )

    def check(self, doc, board):
        return slot_problem(board, doc["size"])

    def run(self, job):
        board = job.board
        version = job.doc["version"]
        if version == board.firmware_version():
            raise ops.Failed("version " + version + " already running")
        slot = board.ota()
        job.checkpoint(DOWNLOAD, {"slot": label(slot), "offset": 0})
        return self._fetch(job, slot, 0)

    def _fetch(self, job, slot, offset):
        doc = job.doc
        buf = bytearray(_BLOCK)
        hasher = https_into(job, slot, doc["url"], doc["size"], offset, buf, DOWNLOAD, {})
        digest = hasher.digest()
        got = binascii.hexlify(digest).decode()
        if got != doc["sha256"].lower():
            spoil(slot, buf)
            raise ops.Failed("sha256 mismatch: image is " + got)
        verify(slot, doc["size"], digest, buf)
        install(job, slot, doc["version"], {"step": "rebooting", "version": doc["version"]})

    def resume(self, job):
        board = job.board
        data = job.data or {}
        if job.phase not in (DOWNLOAD, BOOT):
            return self.run(job)  # reset before our first checkpoint: nothing was written yet
        if job.phase == DOWNLOAD:
            slot = board.ota()
            if slot is None or label(slot) != data.get("slot"):
                raise ops.Failed("OTA partition changed during the download")
            return self._fetch(job, slot, data.get("offset", 0))
        version, previous = self_test(job, {"step": "self-test", "version": data.get("version")})
        return {"version": version, "previous": previous}


OPS = (Firmware(),)
