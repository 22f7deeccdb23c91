# jobs.ops.download: file.download, one file to a path under the device root. MIT licence.
"""file.download {url, path, sha256, size?}: what AWS-Download-File maps to.

The file is streamed to <path>.part, its SHA-256 checked, then renamed over <path> (atomic on
LittleFS): a failed download leaves the old file as it was. The offset is journaled every 64 KiB:
after a reset the .part continues from there with Range. sha256 is required: the AWS
template carries none, so such a job is REJECTED unless a third arg gives it.
"""

import hashlib
import os

from micropython import const

from jobs import ops, store
from jobs.ops import firmware, https

MAX_SIZE = const(4 * 1024 * 1024)
FETCH = "file.fetch"  # journal phase: data {"offset"} of <path>.part
_PROTECTED = ("config.json", "journal.json", "board", "app", "certs", "boot.py", "main.py", "lib")


def safe_path(path):
    """Reason when `path` may not be written by a job, else None."""
    parts = [p for p in path.split("/") if p]
    if not parts or len(path) > 128:
        return "path: empty or too long"
    for p in parts:
        if p in (".", "..") or p.endswith(".part"):
            return "path: " + p + " not allowed"
    if parts[0] in _PROTECTED:
        return "path: " + parts[0] + " is not writable by jobs"
    return None


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


def _resume_point(job, phase, part, size, buf):
    """(offset, hasher of part[:offset]) to continue from: the journaled offset when the job was
    reset in `phase` and the .part still holds those bytes, else (0, a fresh hasher)."""
    offset = job.data.get("offset", 0) if phase is not None and job.phase == phase else 0
    if 0 < offset <= size and offset % https.BLOCK == 0:
        kept = hash_file(part, buf, offset)
        if kept is not None and kept[1] == offset:
            return offset, kept[0]
    return 0, hashlib.sha256()


def fetch_file(job, url, target, sha, size, buf, phase=None):
    """Download url to `target`.part and check it; returns the .part path (caller renames).

    With `phase`, the offset is journaled (job.checkpoint) every 64 KiB and progress reported;
    a job reset in that phase continues its .part from the journaled offset with Range.
    """
    part = target + ".part"
    offset, hasher = _resume_point(job, phase, part, size, buf)
    out = open(part, "r+b" if offset else "wb")
    if offset:
        out.seek(offset)  # bytes past the journaled offset are overwritten
    tracker = firmware.Tracker(job, phase, {"offset": offset}, offset, size, out.flush) if phase else None
    count = [offset]

    def write(pos, mv):
        out.write(mv)
        hasher.update(mv)
        count[0] = pos + len(mv)
        if tracker is not None:
            tracker.advanced(count[0])

    try:
        try:
            wait = tracker.retrying if tracker is not None else None
            https.download(
                url, firmware.ca_for(job), size, write, offset, buf, timeout_ms=firmware._timeout(job), wait=wait
            )
        finally:
            out.close()
        if count[0] != size:
            raise ops.Failed("size mismatch: got " + str(count[0]) + " bytes, expected " + str(size))
        got = firmware.hexdigest(hasher)
        if got != sha.lower():
            raise ops.Failed("sha256 mismatch for " + url.split("?")[0][-64:] + ": got " + got)
    except https.DownloadError as error:
        store.remove(part)
        raise ops.Failed("download: " + str(error.args[0]))
    except Exception:  # a reset (SystemExit on unix, power loss) keeps the .part to resume
        store.remove(part)
        raise
    return part


def makedirs_for(path):
    """Create the folders above the file `path`."""
    store.makedirs(path.rsplit("/", 1)[0] if "/" in path else "")


class Download(ops.Op):
    name = "file.download"
    params = (
        ops.Param("url", ops.URL),
        ops.Param("path", ops.STR, lo=1, hi=128),
        ops.Param("sha256", ops.SHA256),
        ops.Param("size", ops.INT, lo=0, hi=MAX_SIZE, optional=True),
    )

    def check(self, doc, board):
        return safe_path(doc["path"])

    def run(self, job):
        doc = job.doc
        target = job.board.root.rstrip("/") + "/" + "/".join(p for p in doc["path"].split("/") if p)
        makedirs_for(target)
        size = doc.get("size")
        if size is None:
            size = _probe_size(job, doc["url"])
        part = fetch_file(job, doc["url"], target, doc["sha256"], size, bytearray(https.BLOCK), FETCH)
        os.rename(part, target)
        return {"path": doc["path"], "size": str(size)}

    def resume(self, job):
        """After a reset: continue the .part from the journaled offset (or start again)."""
        return self.run(job)


def _probe_size(job, url):
    """Content-Length of url (one request, body not read), for documents without a size."""
    try:
        resp = https.Response(url, firmware.ca_for(job), 0, firmware._timeout(job))
    except https.DownloadError as error:
        raise ops.Failed("download: " + str(error.args[0]))
    except OSError as error:
        raise ops.Failed("download: " + https._unreachable(url, error))
    total = resp.total
    resp.close()
    if total is None or total > MAX_SIZE:
        raise ops.Failed("download: size unknown or above " + str(MAX_SIZE) + " bytes")
    return total


ops.register(Download())
