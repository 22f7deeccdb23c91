# Run by bench/ota.py inside MicroPython: one AWS IoT stream file downloaded by jobs.ops.stream
# over a real MQTT/TLS link (engine.build) into a file, timed; heap sampled.
#   micropython mp_stream.py <config.json> <stream id> <file id> <size> <out file> [heap]
# Prints "@@bench <name> <value>" lines.
import binascii
import gc
import sys
import time

from jobs import config, engine
from jobs.ops import stream


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
        self.checkpoints = 0

    def mqtt(self):
        eng = self._engine
        if not eng.link.connected:
            eng.connect()
        return eng.link, eng.client

    def progress(self, details=None, must=False):
        return True

    def checkpoint(self, phase, data=None):
        self.checkpoints += 1


class Sampler(stream.FileSink):
    """FileSink that samples the heap after each block: live (after a collection) when asked."""

    def __init__(self, path, live):
        super().__init__(path)
        self.live = live
        self.peak = 0
        self.blocks = 0

    def write(self, index, mv, dl):
        super().write(index, mv, dl)
        self.blocks += 1
        if self.live:
            gc.collect()
        used = gc.mem_alloc()
        if used > self.peak:
            self.peak = used


def main():
    cfg_path, stream_id, file_id, size, out = sys.argv[1:6]
    live = len(sys.argv) > 6 and sys.argv[6] == "heap"
    cfg = config.load(cfg_path)
    eng = engine.build(cfg, Board(), log=lambda *a: None)
    eng.connect()
    job = Job(eng)
    sink = Sampler(out, live)
    gc.collect()
    idle = gc.mem_alloc()
    began = time.ticks_ms()
    dl = stream.Download(job, stream_id, int(file_id), int(size), sink, "bench")
    digest = dl.run()
    ms = time.ticks_diff(time.ticks_ms(), began)
    sink.close()
    print("@@bench stream_ms", ms)
    print("@@bench blocks", dl.fetched)
    print("@@bench block_size", dl.block)
    print("@@bench heap_idle", idle)
    print("@@bench heap_peak_above_idle", sink.peak - idle)
    print("@@bench sha256", binascii.hexlify(digest).decode())


main()
