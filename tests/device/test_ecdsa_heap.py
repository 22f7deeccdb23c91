# The signature check on a small heap, with the modules as .mpy (as on the ESP32).
# micropython: heapsize=40K
# micropython: needs=ecdsa,mpy
import binascii
import gc
import json
import sys

from mptest import env

sys.path.insert(0, env("MPTEST_MPY_LIB"))
from jobs import ecdsa  # noqa: E402


def test_verifications_fit_a_40k_heap_and_keep_nothing():
    with open(env("MPTEST_ECDSA") + "/few.json") as f:
        cases = json.load(f)
    checks = []
    for _, digest, der, key, verdict in cases:
        checks.append(
            (
                binascii.unhexlify(digest),
                binascii.unhexlify(der),
                ecdsa.public_key(binascii.unhexlify(key)),
                verdict,
            )
        )
    cases = None
    assert [c[3] for c in checks].count(True) >= 3 and False in [c[3] for c in checks]
    gc.collect()
    before = gc.mem_alloc()
    for _ in range(4):
        for digest, der, key, verdict in checks:
            assert ecdsa.verify(digest, der, key) == verdict
    gc.collect()
    assert gc.mem_alloc() <= before + 64, (before, gc.mem_alloc())
