# bench/mp_signing.py: the code-signing check's time and heap inside MicroPython. MIT licence.
"""Usage: micropython bench/mp_signing.py [count [rounds [time]]]
MPTEST_ECDSA: a folder written by tests/ecdsa_vectors.py; MPTEST_MPY_LIB, when set: the .mpy
build of lib/, put first on sys.path, as on a device.

Verifies the first `count` OpenSSL-made signatures (random keys and messages) `rounds` times
over (default 20 and 5); with `time`, nothing else (for a CPU-time difference taken outside).
Prints `@@bench key value` lines:
    verify_ms_median, verify_ms_min   ms per verification over the rounds (wall clock)
    alloc_bytes                       bytes one verification allocates in all, gc disabled
    live_peak_bytes                   the most heap it holds at once above its start, sampled
                                      after a gc.collect() at each point addition (only where
                                      gc.collect() runs inside a script; not on the WebAssembly port)
    retained_bytes                    heap still held after it returns and a collection
"""

import binascii
import gc
import json
import os
import sys
import time

if os.getenv("MPTEST_MPY_LIB"):
    sys.path.insert(0, os.getenv("MPTEST_MPY_LIB"))
from jobs import ecdsa  # noqa: E402


def report(key, value):
    print("@@bench", key, value)


def vectors(count):
    with open(os.getenv("MPTEST_ECDSA") + "/vectors.json") as f:
        cases = json.load(f)["cases"]
    out = []
    for name, digest, der, key, verdict in cases:
        if name.startswith("random-") and verdict:
            out.append(
                (
                    binascii.unhexlify(digest),
                    binascii.unhexlify(der),
                    ecdsa.public_key(binascii.unhexlify(key)),
                )
            )
    return out[:count]


def collect_works():
    gc.collect()
    before = gc.mem_alloc()
    junk = bytearray(16384)
    del junk
    gc.collect()
    return gc.mem_alloc() < before + 16384


def live_peak(digest, der, key):
    add = ecdsa._add
    peak = [0]

    def probe(*args):
        gc.collect()
        peak[0] = max(peak[0], gc.mem_alloc())
        return add(*args)

    gc.collect()
    start = gc.mem_alloc()
    ecdsa._add = probe
    try:
        assert ecdsa.verify(digest, der, key)
    finally:
        ecdsa._add = add
    return peak[0] - start


def main(count, rounds, time_only):
    sigs = vectors(count)
    if not sigs:
        raise SystemExit("no vectors")
    per = []  # ms per verification in each round (whole rounds: some ports tick in ms)
    for _ in range(rounds):
        t0 = time.ticks_us()
        for digest, der, key in sigs:
            if not ecdsa.verify(digest, der, key):
                raise SystemExit("a valid signature did not verify")
        per.append(time.ticks_diff(time.ticks_us(), t0) / 1000 / len(sigs))
    report("verifications", rounds * len(sigs))
    if time_only or not rounds:
        report("completed", 1)
        return
    per.sort()
    report("verify_ms_median", per[len(per) // 2])
    report("verify_ms_min", per[0])
    digest, der, key = sigs[0]
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    ecdsa.verify(digest, der, key)
    report("alloc_bytes", gc.mem_alloc() - before)
    gc.enable()
    if collect_works():
        report("live_peak_bytes", live_peak(digest, der, key))
        gc.collect()
        before = gc.mem_alloc()
        ecdsa.verify(digest, der, key)
        gc.collect()
        report("retained_bytes", gc.mem_alloc() - before)
    report("completed", 1)


main(
    int(sys.argv[1]) if len(sys.argv) > 1 else 20,
    int(sys.argv[2]) if len(sys.argv) > 2 else 5,
    sys.argv[3:4] == ["time"],
)
