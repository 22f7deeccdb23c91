# micropython: needs=ecdsa
# micropython: timeout=300
# jobs.ecdsa and jobs.ops.codesign against OpenSSL: vectors made at test time (tests/ecdsa_vectors.py).
import binascii
import json
import os

from jobdouble import Job
from jobs import ecdsa, ops
from jobs.ops import codesign
from mptest import env, raises
from opstate import fresh_board

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_loaded = {}


def _vectors():
    if not _loaded:
        with open(env("MPTEST_ECDSA") + "/vectors.json") as f:
            _loaded.update(json.load(f))
    return _loaded


def _h(text):
    return binascii.unhexlify(text)


def _check_cases(prefix, least):
    """Every vector whose name starts with `prefix` gets OpenSSL's verdict; returns how many ran."""
    ran = 0
    wrong = []
    for name, digest, der, key, verdict in _vectors()["cases"]:
        if not name.startswith(prefix):
            continue
        ran += 1
        if ecdsa.verify(_h(digest), _h(der), ecdsa.public_key(_h(key))) != verdict:
            wrong.append(
                name + " (OpenSSL: " + str(verdict) + ") digest " + digest + " der " + der + " key " + key
            )
    assert not wrong, "\n".join(wrong)
    assert ran >= least, prefix + ": only " + str(ran) + " vectors"
    return ran


def test_signatures_made_by_openssl_verify():
    _check_cases("random-", 40)


def test_high_s_verifies_as_openssl_says():
    _check_cases("high-s-", 10)


def test_a_flipped_bit_in_digest_r_or_s_fails():
    _check_cases("flip-", 30)


def test_wrong_key_other_digest_swapped_r_s_fail():
    _check_cases("wrong-key-", 10)
    _check_cases("other-digest-", 10)
    _check_cases("swapped-r-s-", 10)


def test_chosen_scalars_and_keys_agree_with_openssl():
    # u1 = 0, u1 = u2 with Q = G (the addition's doubling branch), Q = -G (cancelling to
    # infinity, on the way and at the end), NAF digits carrying past bit 255, digests >= n
    _check_cases("scalars-", 400)


def test_x_of_r_at_or_above_n_verifies_with_r_plus_n():
    _check_cases("x-above-n-", 6)


def test_malformed_der_is_rejected():
    v = _vectors()
    digest, key = _h(v["digest"]), ecdsa.public_key(_h(v["key"]))
    assert ecdsa.verify(digest, _h(v["der"]), key)  # the signature they were all made from
    accepted = []
    for name, der in v["bad_der"]:
        with raises(ValueError):
            ecdsa.signature(_h(der))
        if ecdsa.verify(digest, _h(der), key):
            accepted.append(name)
    assert not accepted, accepted
    assert len(v["bad_der"]) >= 25


def test_strict_der_reads_r_and_s():
    for der, r, s in _vectors()["parsed"]:
        assert ecdsa.signature(_h(der)) == (int(r, 16), int(s, 16)), der


def test_points_off_the_curve_are_rejected():
    for name, raw in _vectors()["bad_keys"]:
        with raises(ValueError) as caught:
            ecdsa.public_key(_h(raw))
        assert caught.value.args[0], name


def test_key_as_64_or_65_bytes():
    raw = _h(_vectors()["key"])
    key = ecdsa.public_key(raw)
    assert ecdsa.public_key(b"\x04" + raw) == key
    assert ecdsa.public_key(memoryview(raw)) == key
    assert key == (int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))


def test_digest_must_be_32_bytes():
    v = _vectors()
    key = ecdsa.public_key(_h(v["key"]))
    for size in (0, 31, 33, 64):
        with raises(ValueError):
            ecdsa.verify(bytes(size), _h(v["der"]), key)


def test_base64_of_the_document():
    name, b64, key, verdict = _vectors()["files"][0]
    der = ecdsa.from_base64(b64)
    assert ecdsa.signature(der)
    assert ecdsa.from_base64(b64.encode()) == der
    assert binascii.b2a_base64(der).strip() == b64.encode()
    for bad in ("MEUCIQ", "abc", "A"):
        with raises(ValueError) as caught:
            ecdsa.from_base64(bad)
        assert caught.value.args[0] == "not base64"


def test_naf_digits_rebuild_the_scalar():
    top = 2**256
    for k in (0, 1, 15, 16, 31, 32, N - 1, N - 2, top - 1, top - 2, 2**255, 2**255 - 1, int("5" * 64, 16)):
        digits = bytearray(257)
        count = ecdsa._naf(k, digits)
        total = 0
        last = -6
        for i in range(257):
            d = digits[i] - 256 if digits[i] > 127 else digits[i]
            if d:
                assert d & 1 and -16 < d < 16, (k, i, d)
                assert i - last >= 5, (k, i)  # at most one non-zero digit in any 5 in a row
                last = i
            total += d << i
        assert total == k, k
        assert count == last + 1 if k else count == 0, (k, count)


# --- jobs.ops.codesign: the check operations call ------------------------------------------
def _job(key_bytes=None, name="certs/codesign.pub"):
    b = fresh_board()
    cfg = {}
    if key_bytes is not None:
        os.mkdir(b.root + "/certs")
        with open(b.root + "/" + name, "wb") as f:
            f.write(key_bytes)
        cfg["codesign_key"] = name
    return Job(b, {"operation": "test"}, config=cfg)


def _failed(fn, *args):
    with raises(ops.Failed) as caught:
        fn(*args)
    return caught.value.args[0]


def test_streamed_files_are_checked_against_the_provisioned_key():
    folder = env("MPTEST_ECDSA")
    files = _vectors()["files"]
    job = _job(_h(files[0][2]))
    key = codesign.key(job)
    buf = bytearray(4096)
    for name, b64, _, verdict in files:
        if verdict:
            codesign.check_file(key, folder + "/" + name, b64, buf)
        else:
            reason = _failed(codesign.check_file, key, folder + "/" + name, b64, buf)
            assert reason == "sig-sha256-ecdsa: signature does not match the file and the code-signing key"
    assert [f[3] for f in files].count(False) == 1


def test_a_changed_byte_fails_the_file():
    folder = env("MPTEST_ECDSA")
    name, b64, key_hex, verdict = _vectors()["files"][-2]
    assert verdict
    with open(folder + "/" + name, "rb") as f:
        data = bytearray(f.read())
    data[len(data) // 2] ^= 1
    path = "/tmp/mptest-ecdsa-changed.bin"
    with open(path, "wb") as f:
        f.write(data)
    key = ecdsa.public_key(_h(key_hex))
    reason = _failed(codesign.check_file, key, path, b64, bytearray(1024))
    assert reason.startswith("sig-sha256-ecdsa: signature does not match"), reason
    os.remove(path)
    assert _failed(codesign.check_file, key, path, b64, bytearray(64)) == path + " cannot be read"


def test_codesign_reasons():
    v = _vectors()
    key = ecdsa.public_key(_h(v["key"]))
    digest = _h(v["digest"])
    codesign.check(key, digest, binascii.b2a_base64(_h(v["der"])).strip())
    assert _failed(codesign.check, key, digest, "MEU") == "sig-sha256-ecdsa: not base64"
    trailing = binascii.b2a_base64(_h(v["der"]) + b"\x00").strip()
    assert _failed(codesign.check, key, digest, trailing) == "sig-sha256-ecdsa: not a DER SEQUENCE"
    assert _failed(codesign.key, _job()).startswith("no code-signing key: set codesign_key")
    bad = _job(bytes(64))
    assert (
        _failed(codesign.key, bad)
        == "codesign_key " + bad.board.root + "/certs/codesign.pub: not a point on P-256"
    )
    short = _job(bytes(10))
    assert _failed(codesign.key, short).endswith(": 64 bytes X||Y expected, got 10")
    gone = _job(bytes(64), "certs/absent.pub")
    os.remove(gone.board.root + "/certs/absent.pub")
    assert (
        _failed(codesign.key, gone) == "codesign_key " + gone.board.root + "/certs/absent.pub cannot be read"
    )
