# A 32 KiB Jobs message through an 8 KiB buffer on a small heap, where json cannot cope.
# micropython: heapsize=48K
# micropython: needs=mpy
# micropython: wasm32=skip it needs a MemoryError at heapsize=48K, and the wasm32 heap grows past heapsize
# The modules are imported from .mpy (MPTEST_MPY_LIB) as on the ESP32: compiling scan.py from
# source needs more heap than the scan itself.
import gc
import json
import os
import sys

from mptest import env, raises

sys.path.insert(0, env("MPTEST_MPY_LIB"))
from jobs.scan import Scanner  # noqa: E402

PATH = "/tmp/mptest-scan-heap-" + os.urandom(4).hex() + ".json"
STEP = b'{"path":"/app/mod.py","url":"https://example.com/f?X-Amz-Signature=0123456789abcdef","size":1234},'


def _write_message(path, at_least):
    """A start-next answer whose document is bigger than `at_least`, written piece by piece."""
    with open(path, "wb") as out:
        out.write(b'{"timestamp":1747342050,"clientToken":"1a2b3c4d-9","execution":{"jobId":"big-job",')
        out.write(b'"status":"QUEUED","versionNumber":4,"executionNumber":2,')
        out.write(b'"jobDocument":{"operation":"ota.files","files":[')
        written = 0
        while written < at_least:
            out.write(STEP)
            written += len(STEP)
        out.write(b'{"path":"/last","size":1}]}}}')
    return os.stat(path)[6]


def test_32k_message_streams_through_an_8k_buffer_where_json_loads_fails():
    size = _write_message(PATH, 32 * 1024)
    try:
        gc.collect()
        buf = bytearray(8 * 1024)  # the transport's receive buffer, allocated once
        sc = Scanner()
        gc.collect()
        free_before = gc.mem_free()
        with open(PATH, "rb") as payload:
            sc.begin()
            chunks = 0
            while True:
                n = payload.readinto(buf)
                if not n:
                    break
                sc.feed(buf, n)
                chunks += 1
            f = sc.end()
        print("streamed", size, "bytes in", chunks, "chunks; heap free", free_before, "->", gc.mem_free())
        assert size > 32 * 1024 and chunks >= 5
        assert (f.job_id, f.status, f.version_number, f.execution_number) == ("big-job", "QUEUED", 4, 2)
        assert (f.client_token, f.truncated, f.size, f.document) == ("1a2b3c4d-9", True, size, None)

        del buf
        gc.collect()
        print("heap free for json:", gc.mem_free())
        # json.load reads the file as a stream, so only the tree has to fit: it does not
        with raises(MemoryError):
            with open(PATH, "rb") as payload:
                json.load(payload)
        gc.collect()
        # json.loads needs the payload as one bytes object first (what umqtt hands over)
        with raises(MemoryError):
            with open(PATH, "rb") as payload:
                data = payload.read()
                print("read", len(data), "bytes; json.loads")
                json.loads(data)
    finally:
        os.remove(PATH)
