# Run by bench/ota.py inside MicroPython: one AWS IoT stream file downloaded by jobs.ops.stream
# over a real MQTT/TLS link (engine.build) into a file.
#   micropython mp_stream.py <config.json> <stream id> <file id> <size> <out file> heap|alloc|speed
# heap: the live heap (after a collection) at every block, its most above the heap before;
# alloc: bytes allocated with the collector off; speed: the time. "@@bench <name> <value>" lines.
import binascii
import gc
import os
import sys
import time

if os.getenv("MPTEST_MPY"):
    sys.path[:0] = os.getenv("MPTEST_MPY").split(":")  # .mpy modules, as on a device

from jobs import config, engine  # noqa: E402
from jobs.ops import stream  # noqa: E402


class Board:
    name = "bench"
    root = "/tmp"

    def reset(self, reason):
        raise SystemExit(75)


class Job:
    """The parts of jobs.job.Job a stream download uses."""

    def __init__(self, eng):
        self._engine = eng
        self.config = eng.cfg
        self.board = eng.board
        self.phase = None
        self.data = {}
        self.execution_number = 1
        self.id = "bench"

    def mqtt(self):
        eng = self._engine
        if not eng.link.connected:
            eng.connect()
        return eng.link, eng.client

    def progress(self, details=None, must=False):
        return True

    def checkpoint(self, phase, data=None):
        pass


class Sampler(stream.FileSink):
    """FileSink that takes the live heap after each block."""

    def __init__(self, path, live):
        super().__init__(path)
        self.live = live
        self.peak = 0

    def write(self, index, mv, dl):
        super().write(index, mv, dl)
        if self.live:
            gc.collect()
            self.peak = max(self.peak, gc.mem_alloc())


def main():
    cfg_path, stream_id, file_id, size, out, mode = sys.argv[1:7]
    cfg = config.load(cfg_path)
    eng = engine.build(cfg, Board(), log=lambda *a: None)
    eng.connect()
    sink = Sampler(out, mode == "heap")
    dl = stream.Download(Job(eng), stream_id, int(file_id), int(size), sink, "bench")
    gc.collect()
    idle = gc.mem_alloc()
    if mode == "alloc":
        gc.disable()
    began = time.ticks_ms()
    digest = dl.run()
    ms = time.ticks_diff(time.ticks_ms(), began)
    allocated = gc.mem_alloc() - idle
    gc.enable()
    sink.close()
    print("@@bench stream_ms", ms)
    print("@@bench blocks", dl.fetched)
    print("@@bench block_size", dl.block)
    print("@@bench heap_idle", idle)
    if mode == "heap":
        print("@@bench heap_peak_above_idle", sink.peak - idle)
    if mode == "alloc":
        print("@@bench allocated", allocated)
    print("@@bench sha256", binascii.hexlify(digest).decode())


main()
