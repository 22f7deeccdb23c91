# jobs.ops.staging: downloaded files into the device's filesystem. MIT licence.
"""What ota.files and file.download share to write what they fetch.

problem = staging.check_path(path, protected)   # the path rule (REJECTED), None when it holds
staging.ensure_space(folder, sizes)              # ops.Failed with the numbers when it does not fit
part = staging.fetch_file(session, target, url, sha, size, buf, phase)  # <target>.part, checked
staging.hash_file(path, buf) -> (hasher, bytes) or None
staging.sha_of(path, buf); staging.makedirs_for(path)
"""

import hashlib
import os

from micropython import const

from jobs import ops, store
from jobs.ops import transfer

_RESERVE_BLOCKS = const(2)  # LittleFS writes metadata copy-on-write: keep a little free


def hash_file(path, buf, limit=-1):
    """(sha256 hasher, bytes read) over the first `limit` bytes of path (all: -1); None when
    it cannot be read."""
    hasher = hashlib.sha256()
    mv = memoryview(buf)
    got = 0
    try:
        with open(path, "rb") as f:
            while limit < 0 or got < limit:
                n = f.readinto(mv if limit < 0 else mv[: min(len(buf), limit - got)])
                if not n:
                    break
                hasher.update(mv[:n])
                got += n
    except OSError:
        return None
    return hasher, got


def sha_of(path, buf):
    """Hex SHA-256 of the file at path, or None when it cannot be read."""
    hashed = hash_file(path, buf)
    return transfer.hexdigest(hashed[0]) if hashed is not None else None


def _resume_point(job, phase, part, size, buf):
    """(offset, hasher of part[:offset]) to continue from: the journaled offset when the job was
    reset in `phase` and the .part still holds those bytes, else (0, a fresh hasher)."""
    offset = job.data.get("offset", 0) if phase is not None and job.phase == phase else 0
    if 0 < offset <= size and offset % transfer.BLOCK == 0:
        kept = hash_file(part, buf, offset)
        if kept is not None and kept[1] == offset:
            return offset, kept[0]
    return 0, hashlib.sha256()


def fetch_file(session, target, url, sha, size, buf, phase=None, details=None):
    """Download url to `target`.part and check its size and SHA-256; returns the .part path
    (the caller renames it). `sha`: the hex SHA-256 it must have, or a function given the
    digest (bytes) that raises ops.Failed (a code-signature check); `details`: Tracker's.

    With `phase`, the offset is journaled (job.checkpoint) every 64 KiB and progress reported;
    a job reset in that phase continues its .part from the journaled offset with Range.
    """
    job = session.job
    part = target + ".part"
    offset, hasher = _resume_point(job, phase, part, size, buf)
    ensure_space(part.rsplit("/", 1)[0] or "/", (size - offset,))
    out = open(part, "r+b" if offset else "wb")
    if offset:
        out.seek(offset)  # bytes past the journaled offset are overwritten
    tracker = transfer.Tracker(job, phase, {"offset": offset}, offset, size, out.flush, details) if phase else None
    count = [offset]

    def write(pos, mv):
        out.write(mv)
        hasher.update(mv)
        count[0] = pos + len(mv)
        if tracker is not None:
            tracker.advanced(count[0])

    try:
        try:
            session.download(url, size, write, offset, buf, tracker.retrying if tracker else None)
        finally:
            out.close()
        if count[0] != size:
            raise ops.Failed("size mismatch: got " + str(count[0]) + " bytes, expected " + str(size))
        if not isinstance(sha, str):
            sha(hasher.digest())
        else:
            got = transfer.hexdigest(hasher)
            if got != sha.lower():
                raise ops.Failed("sha256 mismatch for " + url.split("?")[0][-64:] + ": got " + got)
    except Exception:  # a reset (SystemExit on unix, power loss) keeps the .part to resume
        store.remove(part)
        raise
    return part


def makedirs_for(path):
    """Create the folders above the file `path`."""
    store.makedirs(path.rsplit("/", 1)[0] if "/" in path else "")


def check_path(path, protected=()):
    """None when `path` is a relative file path a job may write, else the rule it breaks.

    One rule for ota.files and file.download: relative (no leading "/"), names separated by
    single slashes, no "." or "..", no name ending in ".part" (kept for downloads), and a
    first name outside `protected`."""
    if path.startswith("/"):
        return "must be relative, without a leading /"
    parts = path.split("/")
    for p in parts:
        if p == "":
            return "empty name (// or a trailing /) not allowed"
        if p in (".", ".."):
            return p + " not allowed"
        if p.endswith(".part"):
            return p + " not allowed (.part is kept for downloads)"
    if parts[0] in protected:
        return parts[0] + " is not writable by jobs"
    return None


def _free_space(folder):
    """(free bytes, block size) of the filesystem that holds `folder`."""
    st = os.statvfs(folder)
    return st[4] * st[1], st[1] or transfer.BLOCK


def ensure_space(folder, sizes, what="download"):
    """ops.Failed with the numbers unless files of `sizes` bytes fit on the filesystem of
    `folder` (each file rounded up to whole blocks, plus a small reserve)."""
    try:
        free, block = _free_space(folder)
    except OSError:
        return  # a filesystem without statvfs: the write itself will tell
    need = _RESERVE_BLOCKS * block
    for size in sizes:
        need += (size + block - 1) // block * block
    if need > free:
        raise ops.Failed(
            "not enough space for the " + what + ": " + str(need) + " bytes needed, " + str(free) + " free"
        )
