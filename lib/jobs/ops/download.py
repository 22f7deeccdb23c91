# jobs.ops.download: file.download, one file to a path under the device root. MIT licence.
"""file.download {url, path, sha256, size?}: what AWS-Download-File maps to.

The file is streamed to <path>.part, its SHA-256 checked, then renamed over <path> (atomic on
LittleFS): a failed download leaves the old file as it was. sha256 is required: the AWS
template carries none, so such a job is REJECTED unless a third arg gives it.
"""

import hashlib
import os

from micropython import const

from jobs import ops, store
from jobs.ops import firmware, https

MAX_SIZE = const(4 * 1024 * 1024)
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


def fetch_file(job, url, target, sha, size, buf):
    """Download url to `target`.part and check it; returns the .part path (caller renames)."""
    part = target + ".part"
    hasher = hashlib.sha256()
    out = open(part, "wb")
    count = [0]

    def write(pos, mv):
        out.write(mv)
        hasher.update(mv)
        count[0] = pos + len(mv)

    try:
        try:
            https.download(url, firmware.ca_for(job), size, write, 0, buf, timeout_ms=firmware._timeout(job))
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
    except BaseException:
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
        target = _target(job)
        makedirs_for(target)
        size = doc.get("size")
        if size is None:
            size = _probe_size(job, doc["url"])
        part = fetch_file(job, doc["url"], target, doc["sha256"], size, bytearray(https.BLOCK))
        os.rename(part, target)
        return {"path": doc["path"], "size": str(size)}

    def resume(self, job):
        """After a reset mid-download: remove the partial file; the job fails (not re-run)."""
        if job.doc and isinstance(job.doc.get("path"), str):
            store.remove(_target(job) + ".part")
        raise ops.Failed("interrupted by reset, not re-run")


def _target(job):
    return job.board.root.rstrip("/") + "/" + "/".join(p for p in job.doc["path"].split("/") if p)


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
