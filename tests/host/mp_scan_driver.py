# Runs inside MicroPython for tests/host/test_scan_property.py: scans every document of a file.
"""Usage: micropython mp_scan_driver.py <cases-file>

The file holds records: a header line "<length> <chunk sizes...>" and then <length> raw bytes.
Each document is scanned whole (from a larger buffer with junk after it) and streamed in the
given chunk sizes through an 8 KiB buffer, as the transport does. One JSON line per document:
[index, whole, streamed], each result ["ok", fields...], ["err", kind, offset] or ["crash", text].
"""

import json
import sys

from jobs.scan import ScanError, Scanner


def _text(value):
    return None if value is None else value.encode().hex()


def _result(sc, run):
    try:
        f = run()
    except ScanError as error:
        if not isinstance(error.kind, str) or not isinstance(error.offset, int):
            return ["crash", "ScanError without kind and offset"]
        return ["err", error.kind, error.offset]
    except Exception as error:  # noqa: BLE001 - anything but ScanError is what this test hunts
        return ["crash", type(error).__name__ + ": " + str(error)]
    return [
        "ok",
        _text(f.client_token),
        _text(f.code),
        _text(f.message),
        f.has_execution,
        _text(f.job_id),
        _text(f.status),
        f.version_number,
        f.execution_number,
        _text(f.state_status),
        f.state_version,
        f.document,
        f.status_details,
        f.size,
        f.truncated,
    ]


def _stream(sc, doc, sizes, chunk_buf):
    """Feed `doc` in chunks of `sizes`, each copied into the same buffer as the transport does."""
    sc.begin()
    at = 0
    for size in sizes:
        piece = doc[at : at + size]
        chunk_buf[: len(piece)] = piece
        sc.feed(chunk_buf, len(piece))
        at += size
    return sc.end()


def main(path):
    sc = Scanner()
    chunk_buf = bytearray(8192)
    index = 0
    with open(path, "rb") as cases:
        while True:
            header = cases.readline()
            if not header:
                break
            numbers = [int(x) for x in header.split()]
            doc = cases.read(numbers[0]) if numbers[0] else b""
            sizes = numbers[1:]
            whole_buf = bytearray(len(doc) + 8)
            whole_buf[: len(doc)] = doc
            whole_buf[len(doc) :] = b'}]"x\\ 9 '  # junk beyond n: must never be read
            whole = _result(sc, lambda: sc.scan(whole_buf, len(doc)))  # noqa: B023 - called at once
            streamed = _result(sc, lambda: _stream(sc, doc, sizes, chunk_buf))  # noqa: B023
            print(json.dumps([index, whole, streamed]))
            index += 1


main(sys.argv[1])
