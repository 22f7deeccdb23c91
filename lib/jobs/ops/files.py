# jobs.ops.files: ota.files, an atomic update of the application files. MIT licence.
"""ota.files {files: [{path, url, sha256, size}], version?}.

1. Stage: the inactive app folder gets a copy of the running files and each new file (downloaded
   to .part, SHA-256 and size checked, renamed). Nothing the running application uses is touched.
2. Swap: appstore.switch() (one atomic rename), journal, job.reboot().
3. After the boot: self-test (engine connected, job.progress(must=True) accepted) -> appstore.commit() ->
   SUCCEEDED; a reset before the commit makes appstore.boot() return to the previous folder and
   this reports FAILED "rolled back".
A reset while staging restarts the staging (files already staged and intact are kept).

The steps are functions afr_ota (jobs.ops.afr) shares with its own fetch: begin(), stage(),
swap(), after_swap().
"""

import os

from micropython import const

from jobs import ops, store
from jobs.ops import appstore, staging, transfer

MAX_FILES = const(16)
MAX_FILE_SIZE = const(512 * 1024)
MAX_TOTAL = const(1024 * 1024)
STAGE = "files.stage"
SWAP = "files.swap"
_FILE = (
    ops.Param("path", ops.STR, lo=1, hi=96),
    ops.Param("url", ops.URL),
    ops.Param("sha256", ops.SHA256),
    ops.Param("size", ops.INT, lo=0, hi=MAX_FILE_SIZE),
)


def _check_file(i, item, seen, board):
    where = "files[" + str(i) + "]"
    if not isinstance(item, dict):
        return where + ": object expected"
    problem = ops.check_fields(_FILE, item, board, where)
    if problem:
        return problem
    return check_path(item["path"], where + ".path", seen)


def check_path(path, where, seen):
    """The path rule for an application file, and no path twice (`seen`): the reason or None."""
    problem = staging.check_path(path)
    if problem:
        return where + ": " + problem
    if path in seen:
        return where + ": listed twice"
    seen[path] = True
    return None


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


def begin(job, items):
    """Start staging `items` ({"path", "size", ...}): the inactive folder emptied, journaled
    (STAGE), the space it needs checked; the stage folder's name."""
    root = job.board.root
    current = appstore.state(root)
    if current["state"] != "VALID":
        raise ops.Failed("the previous application update is not committed yet")
    stage = appstore.other(current)
    job.checkpoint(STAGE, {"stage": stage})
    store.rmtree(appstore.folder(root, stage))
    # what staging writes: a copy of each running file kept, and each new file
    live = appstore.folder(root)
    sizes = [item["size"] for item in items]
    for rel in _kept(live, items):
        sizes.append(os.stat(live + "/" + rel)[6])
    staging.ensure_space(root, sizes, "application files")
    return stage


def stage(job, stage, items, fetch, intact):
    """Fill the stage folder: a copy of each running file not replaced, then each item fetched
    by fetch(item, target, buf, data) -> the .part it wrote (checked), renamed over target;
    an item intact(item, target, buf) already is (staged before a reset) is kept. Journals STAGE
    {"stage", "done"} after each file; data is that entry, for a fetch that journals mid-file."""
    root = job.board.root
    live = appstore.folder(root)
    staged = appstore.folder(root, stage)
    staging.makedirs_for(staged + "/x")
    buf = bytearray(transfer.BLOCK)
    try:
        for rel in _kept(live, items):
            staging.makedirs_for(staged + "/" + rel)
            _copy(live + "/" + rel, staged + "/" + rel, buf)
        count = 0
        for item in items:
            rel = item["path"]
            target = staged + "/" + rel
            count += 1
            if intact(item, target, buf):
                continue  # staged before a reset, still intact
            staging.makedirs_for(target)
            if not job.progress({"step": "downloading", "file": rel[-64:], "count": str(count)}):
                raise ops.Canceled()
            os.rename(fetch(item, target, buf, {"stage": stage, "done": count - 1}), target)
            job.checkpoint(STAGE, {"stage": stage, "done": count})
    except BaseException:
        store.rmtree(staged)  # the running application was never touched
        raise


def swap(job, stage, version, details):
    """Journal SWAP, switch the application to the stage folder, reboot with `details`."""
    current = appstore.state(job.board.root)
    job.checkpoint(SWAP, {"stage": stage, "version": version, "previous": current["version"]})
    appstore.switch(job.board.root, stage, version)
    job.reboot(details)
    raise ops.Failed("reset did not happen")


def after_swap(job, test, again):
    """Resume in SWAP: the self-test (update `test` accepted, else a reset back to the previous
    folder) and the commit, (version, previous); ops.Failed("rolled back"); or, reset between
    the journal and the switch, the switch and a reboot with `again`."""
    root = job.board.root
    data = job.data or {}
    s = appstore.state(root)
    if s["dir"] == data.get("stage") and s["version"] == data.get("version"):
        if s["state"] != "VALID":
            if not job.progress(test, must=True):
                job.board.reset("ota.files self-test: update not accepted")
            appstore.commit(root)
        return s["version"], str(data.get("previous"))
    if s.get("rolledBack") == data.get("stage"):
        raise ops.Failed("rolled back")
    # the staged files are complete: finish the swap
    appstore.switch(root, data["stage"], data["version"])
    job.reboot(again)
    raise ops.Failed("reset did not happen")


def _sha_intact(item, target, buf):
    return staging.sha_of(target, buf) == item["sha256"].lower()


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
            problem = _check_file(i, item, seen, board)
            if problem:
                return problem
            total += item["size"]
        if total > MAX_TOTAL:
            return "files: " + str(total) + " bytes in all, at most " + str(MAX_TOTAL)
        return None

    def run(self, job):
        return self._stage(job, begin(job, job.doc["files"]))

    def _stage(self, job, name):
        with transfer.Session(job) as session:

            def fetch(item, target, buf, data):
                return staging.fetch_file(session, target, item["url"], item["sha256"], item["size"], buf)

            stage(job, name, job.doc["files"], fetch, _sha_intact)
        version = job.doc.get("version") or job.id
        swap(job, name, version, {"step": "rebooting", "version": version})

    def resume(self, job):
        data = job.data or {}
        if job.phase not in (STAGE, SWAP) or "stage" not in data:
            return self.run(job)  # reset before our first checkpoint: nothing was staged yet
        if job.phase == STAGE:
            return self._stage(job, data["stage"])
        version = data.get("version")
        test = {"step": "self-test", "version": version}
        version, previous = after_swap(job, test, {"step": "rebooting", "version": version})
        return {"version": version, "previous": previous}


def _kept(live, files):
    """Relative paths of the running files that this update does not replace."""
    updated = {}
    for item in files:
        updated[item["path"]] = True
    return [rel for rel in _walk(live) if rel not in updated and not rel.endswith(".part")]


OPS = (Files(),)
