# Run by bench/ota.py on the 32-bit runtime (tools/wasm/run.mjs) and the Unix port: the heap a
# stream download (jobs.ops.stream, .mpy) holds, in object sizes as the chip counts them. The
# link is tests/device/streamrig's in-process stream service (this runtime has no sockets).
# Phases with a collection before each (on wasm32 each is its own call from JavaScript):
#   idle   the service, link and job made; no download yet
#   run    a 4 KiB-block download stopped half-way (canceled): bytes allocated per block
#   held   the download object still alive half-way: what it holds above idle
# Prints "@@bench <name> <value>" lines.
import gc
import os
import sys

if os.getenv("MPTEST_MPY"):
    sys.path[:0] = os.getenv("MPTEST_MPY").split(":")  # .mpy modules, as on a device

try:
    import toplevel  # the wasm32 runner's

    then = toplevel.then
    _queue = None
except ImportError:
    _queue = []

    def then(fn, *args):
        _queue.append((fn, args))


import streamrig  # noqa: E402
from jobs import ops  # noqa: E402
from jobs.ops import stream  # noqa: E402

BLOCKS = 64
S = {}


class Sink:
    """Blocks kept nowhere: the heap measured is the download's, not a file's."""

    def write(self, index, mv, dl):
        pass

    def read(self, index, mv, dl):
        pass

    def flush(self):
        pass

    def close(self):
        pass


def setup():
    data = bytes((i * 31 + (i >> 12)) & 255 for i in range(BLOCKS * 4096))
    svc = streamrig.Service(data)
    for i in range(BLOCKS):
        svc.block(i, 4096)  # built now: the service's memory is not the device's
    link = streamrig.Link(svc)
    job = streamrig.Job(link)
    job.cancel_after = 40  # about half the blocks, then job.progress() says canceled
    link.reconnect(job.client.topics.subscriptions())
    S.update(svc=svc, link=link, job=job, data=data)
    then(idle)


def idle():
    S["idle"] = gc.mem_alloc()
    then(run)


def run():
    dl = stream.Download(S["job"], S["svc"].stream, 0, len(S["data"]), Sink(), "bench")
    before = gc.mem_alloc()
    try:
        dl.run()
    except ops.Canceled:
        pass
    spent = gc.mem_alloc() - before
    S["dl"] = dl
    S["link"].close()  # what the service queued and recorded is not the device's
    S["svc"].requests = []
    S["svc"].served = []
    print("@@bench blocks", dl.fetched)
    print("@@bench allocated_per_block", spent // max(1, dl.fetched))
    then(held)


def held():
    print("@@bench held_above_idle", gc.mem_alloc() - S["idle"])
    print("@@bench completed 1")


then(setup)
while _queue:
    fn, args = _queue.pop(0)
    gc.collect()
    fn(*args)
