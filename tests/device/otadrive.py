# otadrive: one "boot" of a simulated device that runs or resumes one job (host tests drive it).
"""micropython otadrive.py <state_dir> [doc.json] [config.json]

What the firmware does at boot, reduced to one job: the board's boot selection, the app-folder
boot hook, then resume the journaled job (or run the one in doc.json). The outcome goes to
<state_dir>/result.json. A reset ends the process with status 75.
Environment: DRIVE_RESET_AT=n resets at the n-th checkpoint; DRIVE_CRASH=1 resets right after
boot (a new image that dies before its self-test); DRIVE_REFUSE=1: updates that must be accepted
are not (a self-test whose IN_PROGRESS is rejected or unanswered); DRIVE_HEAP=1 records the peak live heap.
"""

import gc
import json
import os
import sys

import board
from jobdouble import Job
from jobs import ops
from jobs.ops import appstore

_peak = [0]


def _sample():
    """Live heap after a collection every 32 blocks written; each new peak is printed."""
    write = board.SimPartition.writeblocks

    def sampled(slot, block, buf, offset=0):
        if block % 32 == 0:
            gc.collect()
            if gc.mem_alloc() > _peak[0]:
                _peak[0] = gc.mem_alloc()
                print("@@heap", _peak[0])
        return write(slot, block, buf, offset)

    board.SimPartition.writeblocks = sampled


def _save(path, data):
    with open(path + ".tmp", "w") as f:
        json.dump(data, f)
    os.rename(path + ".tmp", path)


def main(argv):
    state = argv[1]
    config = {}
    if len(argv) > 3:
        with open(argv[3]) as f:
            config = json.load(f)
    config["board_state_dir"] = state
    b = board.Board(config)
    appstore.boot(b.root)
    if os.getenv("DRIVE_CRASH"):
        b.reset("crash before self-test")
    journal = state + "/journal.json"
    job = Job(b, None, config=config, journal=journal)
    resuming = job.phase is not None
    if not resuming:
        with open(argv[2]) as f:
            job.doc = json.load(f)
    if os.getenv("DRIVE_RESET_AT"):
        job.reset_at = int(os.getenv("DRIVE_RESET_AT"))
    if os.getenv("DRIVE_REFUSE"):
        job.refuse_must = True
    if os.getenv("DRIVE_HEAP"):
        _sample()
    op, job.doc, reason = ops.prepare(job.doc, b)
    if op is None:
        result = {"status": "REJECTED", "details": {"reason": reason}}
    else:
        try:
            details = op.resume(job) if resuming else op.run(job)
            result = {"status": "SUCCEEDED", "details": details or {}}
        except ops.Failed as failed:
            result = {"status": "FAILED", "details": {"reason": failed.args[0]}}
    result["updates"] = [u[1] for u in job.updates]
    result["peak_heap"] = _peak[0]
    _save(state + "/result.json", result)
    try:
        os.remove(journal)
    except OSError:
        pass


main(sys.argv)
