# jobs.ops.files: ota.files, an atomic update of the application files. MIT licence.
"""ota.files {files: [{path, url, sha256, size}], version?}.

1. Stage: the inactive app folder gets a copy of the running files and each new file (downloaded
   to .part, SHA-256 and size checked, renamed). Nothing the running application uses is touched.
2. Swap: appstore.switch() (one atomic rename), journal, job.reboot().
3. After the boot: self-test (engine connected, job.progress(must=True) accepted) -> appstore.commit() ->
   SUCCEEDED; a reset before the commit makes appstore.boot() return to the previous folder and
   this reports FAILED "rolled back".
A reset while staging restarts the staging (files already staged and intact are kept).
"""

import os

from micropython import const

from jobs import ops, store
from jobs.ops import appstore, download, firmware, https

MAX_FILES = const(16)
MAX_FILE_SIZE = const(512 * 1024)
MAX_TOTAL = const(1024 * 1024)
STAGE = "files.stage"
SWAP = "files.swap"
_FILE_KEYS = ("path", "url", "sha256", "size")


def _check_file(i, item, seen):
    where = "files[" + str(i) + "]"
    if not isinstance(item, dict):
        return where + ": object expected"
    for key in item:
        if key not in _FILE_KEYS:
            return where + ": unknown key " + str(key)[:32]
    for key in _FILE_KEYS:
        if key not in item:
            return where + "." + key + ": required"
    kinds = {"path": ops.Param("path", ops.STR, lo=1, hi=96), "url": ops.Param("url", ops.URL)}
    kinds["sha256"] = ops.Param("sha256", ops.SHA256)
    kinds["size"] = ops.Param("size", ops.INT, lo=0, hi=MAX_FILE_SIZE)
    for key in _FILE_KEYS:
        problem = kinds[key].check(item[key], None)
        if problem:
            return where + "." + key + ": " + problem
    path = item["path"]
    parts = [p for p in path.split("/") if p]
    for p in parts:
        if p in (".", "..") or p.endswith(".part") or p == "app.json":
            return where + ".path: " + p + " not allowed"
    clean = "/".join(parts)
    if clean in seen:
        return where + ".path: listed twice"
    seen[clean] = True
    return None


def _clean(path):
    return "/".join(p for p in path.split("/") if p)


def _walk(top, rel=""):
    """Relative paths of every file under top."""
    try:
        entries = list(os.ilistdir(top + ("/" + rel if rel else "")))
    except OSError:
        return
    for entry in entries:
        name = rel + "/" + entry[0] if rel else entry[0]
        if entry[1] == 0x4000:
            yield from _walk(top, name)
        else:
            yield name


def _copy(src, dst, buf):
    mv = memoryview(buf)
    with open(src, "rb") as fin, open(dst + ".part", "wb") as fout:
        while True:
            n = fin.readinto(buf)
            if not n:
                break
            fout.write(mv[:n])
    os.rename(dst + ".part", dst)


def _sha_of(path, buf):
    hashed = download.hash_file(path, buf)
    return firmware.hexdigest(hashed[0]) if hashed is not None else None


class Files(ops.Op):
    name = "ota.files"
    params = (
        ops.Param("files", ops.LIST, lo=1, hi=MAX_FILES),
        ops.Param("version", ops.STR, lo=1, hi=64, optional=True),
    )

    def check(self, doc, board):
        seen = {}
        total = 0
        for i, item in enumerate(doc["files"]):
            problem = _check_file(i, item, seen)
            if problem:
                return problem
            total += item["size"]
        if total > MAX_TOTAL:
            return "files: " + str(total) + " bytes in all, at most " + str(MAX_TOTAL)
        return None

    def run(self, job):
        root = job.board.root
        current = appstore.state(root)
        if current["state"] != "VALID":
            raise ops.Failed("the previous application update is not committed yet")
        stage = appstore.other(current)
        job.checkpoint(STAGE, {"stage": stage})
        store.rmtree(appstore.folder(root, stage))
        return self._stage(job, stage)

    def _stage(self, job, stage):
        root = job.board.root
        live = appstore.folder(root)
        staged = appstore.folder(root, stage)
        download.makedirs_for(staged + "/x")
        buf = bytearray(https.BLOCK)
        updated = {}
        for item in job.doc["files"]:
            updated[_clean(item["path"])] = item
        try:
            for rel in list(_walk(live)):
                if rel not in updated and not rel.endswith(".part"):
                    download.makedirs_for(staged + "/" + rel)
                    _copy(live + "/" + rel, staged + "/" + rel, buf)
            count = 0
            for rel in updated:
                item = updated[rel]
                target = staged + "/" + rel
                count += 1
                if _sha_of(target, buf) == item["sha256"].lower():
                    continue  # staged before a reset, still intact
                download.makedirs_for(target)
                if not job.progress({"step": "downloading", "file": rel[-64:], "count": str(count)}):
                    raise ops.Canceled()
                part = download.fetch_file(job, item["url"], target, item["sha256"], item["size"], buf)
                os.rename(part, target)
                job.checkpoint(STAGE, {"stage": stage, "done": count})
        except BaseException:
            store.rmtree(staged)  # the running application was never touched
            raise
        version = job.doc.get("version") or job.id
        current = appstore.state(root)
        job.checkpoint(SWAP, {"stage": stage, "version": version, "previous": current["version"]})
        appstore.switch(root, stage, version)
        job.reboot({"step": "rebooting", "version": version})
        raise ops.Failed("reset did not happen")

    def resume(self, job):
        root = job.board.root
        data = job.data or {}
        if job.phase not in (STAGE, SWAP) or "stage" not in data:
            return self.run(job)  # reset before our first checkpoint: nothing was staged yet
        if job.phase == STAGE:
            return self._stage(job, data["stage"])
        s = appstore.state(root)
        if s["dir"] == data.get("stage") and s["version"] == data.get("version"):
            if s["state"] != "VALID":
                if not job.progress({"step": "self-test", "version": s["version"]}, must=True):
                    job.board.reset("ota.files self-test: update not accepted")
                appstore.commit(root)
            return {"version": s["version"], "previous": str(data.get("previous"))}
        if s.get("rolledBack") == data.get("stage"):
            raise ops.Failed("rolled back")
        # reset between the journal and the switch: the staged files are complete, finish the swap
        appstore.switch(root, data["stage"], data["version"])
        job.reboot({"step": "rebooting", "version": data["version"]})
        raise ops.Failed("reset did not happen")


ops.register(Files())
