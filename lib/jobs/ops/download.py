# jobs.ops.download: file.download, one file to a path under the device root. MIT licence.
"""file.download {url, path, sha256, size?}: what AWS-Download-File maps to.

The file is streamed to <path>.part, its SHA-256 checked, then renamed over <path> (atomic on
LittleFS): a failed download leaves the old file as it was. The offset is journaled every 64 KiB:
after a reset the .part continues from there with Range. sha256 is required: the AWS
template carries none, so such a job is REJECTED unless a third arg gives it.
"""

import os

from micropython import const

from jobs import ops, store
from jobs.ops import staging, transfer

MAX_SIZE = const(4 * 1024 * 1024)
FETCH = "file.fetch"  # journal phase: data {"offset"} of <path>.part
_PROTECTED = ("config.json", "journal.json", "board", "app", "certs", "boot.py", "main.py", "lib")


class Download(ops.Op):
    name = "file.download"
    params = (
        ops.Param("url", ops.URL),
        ops.Param("path", ops.STR, lo=1, hi=128),
        ops.Param("sha256", ops.SHA256),
        ops.Param("size", ops.INT, lo=0, hi=MAX_SIZE, optional=True),
    )

    def check(self, doc, board):
        problem = staging.check_path(doc["path"], _PROTECTED)
        return "path: " + problem if problem else None

    def run(self, job):
        doc = job.doc
        target = store.join(job.board.root, doc["path"])
        staging.makedirs_for(target)
        with transfer.Session(job) as session:
            size = doc.get("size")
            if size is None:
                size = session.size(doc["url"])
                if size is None or size > MAX_SIZE:
                    raise ops.Failed("download: size unknown or above " + str(MAX_SIZE) + " bytes")
            buf = bytearray(transfer.BLOCK)
            part = staging.fetch_file(session, target, doc["url"], doc["sha256"], size, buf, FETCH)
        os.rename(part, target)
        return {"path": doc["path"], "size": str(size)}

    def resume(self, job):
        """After a reset: continue the .part from the journaled offset (or start again)."""
        return self.run(job)


OPS = (Download(),)
