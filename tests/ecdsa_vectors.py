"""ECDSA P-256 / SHA-256 vectors for the device's verifier, made at run time, never committed.

Keys are generated on each run and signatures made by `cryptography` (OpenSSL). Every expected
result is OpenSSL's own verdict on the same digest, signature and key, so jobs.ecdsa is checked
against an independent implementation; the few vectors built here by hand (chosen scalars, an
R whose x coordinate is at or above n) are confirmed by OpenSSL before they are written.

    write(folder, good=48) -> folder/vectors.json, folder/few.json (5 of the cases, for a small
                              heap), folder/msg-*.bin (the streamed-file cases)

vectors.json:
    cases     [name, digest hex, DER hex, key hex (64 bytes X||Y), OpenSSL's verdict]
    bad_der   [name, DER hex]: malformed encodings of a valid signature of `digest` under `key`
    bad_keys  [name, key hex]: byte strings that are not a P-256 point
    files     [file name, base64 DER signature, key hex, OpenSSL's verdict]
    parsed    [DER hex, r hex, s hex]: what a strict DER parser must read
    digest, key, der: the valid signature the bad_der cases were made from
"""

import base64
import hashlib
import json
import os
import random
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
G = (
    0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
    0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
)
CURVE = ec.SECP256R1()
PREHASHED = ec.ECDSA(utils.Prehashed(hashes.SHA256()))
FILE_SIZES = (0, 1, 4095, 4096, 4097, 10000)


def raw_key(public_key) -> bytes:
    """64 bytes X||Y of a cryptography EC public key."""
    point = public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return point[1:]


def openssl_verdict(digest: bytes, der: bytes, raw: bytes) -> bool:
    key = ec.EllipticCurvePublicKey.from_encoded_point(CURVE, b"\x04" + raw)
    try:
        key.verify(der, digest, PREHASHED)
    except InvalidSignature:
        return False
    return True


def _multiple(k: int) -> tuple:
    """k*G as affine (x, y), from OpenSSL."""
    numbers = ec.derive_private_key(k, CURVE).public_key().public_numbers()
    return numbers.x, numbers.y


# --- affine arithmetic for the few points OpenSSL cannot be asked for (R not a known multiple of G)
def _add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    if a[0] == b[0]:
        if (a[1] + b[1]) % P == 0:
            return None
        slope = (3 * a[0] * a[0] - 3) * pow(2 * a[1], -1, P) % P
    else:
        slope = (b[1] - a[1]) * pow(b[0] - a[0], -1, P) % P
    x = (slope * slope - a[0] - b[0]) % P
    return x, (slope * (a[0] - x) - a[1]) % P


def _mul(k, point):
    out = None
    for bit in bin(k)[2:]:
        out = _add(out, out)
        if bit == "1":
            out = _add(out, point)
    return out


def _y_for(x):
    """A y with (x, y) on the curve, or None."""
    c = (x * x * x - 3 * x + B) % P
    y = pow(c, (P + 1) // 4, P)  # p = 3 mod 4
    return y if y * y % P == c else None


def _raw(x, y) -> bytes:
    return x.to_bytes(32, "big") + y.to_bytes(32, "big")


def _der(r, s) -> bytes:
    return utils.encode_dss_signature(r, s)


def _int_der(value_bytes: bytes) -> bytes:
    return b"\x02" + bytes([len(value_bytes)]) + value_bytes


def _minimal(value: int) -> bytes:
    body = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return b"\x00" + body if body[0] & 0x80 else body


def _signed(value: int) -> bytes:
    """The minimal two's complement bytes of any integer, as DER writes an INTEGER."""
    size = ((value if value >= 0 else -value - 1).bit_length() + 8) // 8
    return value.to_bytes(size, "big", signed=True)


def _seq(body: bytes) -> bytes:
    return b"\x30" + bytes([len(body)]) + body


class _Vectors:
    def __init__(self, rng: random.Random):
        self.rng = rng
        self.cases = []

    def case(self, name, digest, der, raw, expect=None):
        verdict = openssl_verdict(digest, der, raw)
        if expect is not None and verdict != expect:
            raise AssertionError(f"vector {name}: OpenSSL says {verdict}, the construction meant {expect}")
        self.cases.append([name, digest.hex(), der.hex(), raw.hex(), verdict])

    def scalar_case(self, name, d, u1, u2):
        """A signature for which the verifier computes exactly u1*G + u2*Q, Q = d*G."""
        raw = _raw(*_multiple(d))
        k = (u1 + u2 * d) % N
        if k == 0:
            r = 1 + self.rng.randrange(N - 1)  # R is the point at infinity: nothing can verify
            expect = False
        else:
            r = _multiple(k)[0] % N
            expect = True
        s = r * pow(u2, -1, N) % N
        e = u1 * s % N
        self.case(name, e.to_bytes(32, "big"), _der(r, s), raw, expect)
        if e + N < 2**256 and self.rng.random() < 0.2:  # a digest at or above n: the same e mod n
            self.case(name + "-digest+n", (e + N).to_bytes(32, "big"), _der(r, s), raw, expect)


def _random_signatures(v: _Vectors, count: int) -> list:
    signed = []
    for i in range(count):
        key = ec.generate_private_key(CURVE)
        message = os.urandom(v.rng.randrange(0, 300))
        der = key.sign(message, ec.ECDSA(hashes.SHA256()))
        raw = raw_key(key.public_key())
        digest = hashlib.sha256(message).digest()
        v.case(f"random-{i}", digest, der, raw, True)
        signed.append((digest, der, raw))
    return signed


def _variants(v: _Vectors, signed: list) -> None:
    for i, (digest, der, raw) in enumerate(signed[:12]):
        other = signed[(i + 1) % len(signed)]
        r, s = utils.decode_dss_signature(der)
        v.case(f"high-s-{i}", digest, _der(r, N - s), raw, True)  # both s and n-s verify
        bit = v.rng.randrange(256)
        flipped = (int.from_bytes(digest, "big") ^ (1 << bit)).to_bytes(32, "big")
        v.case(f"flip-digest-{i}", flipped, der, raw, False)
        for which in ("r", "s"):
            value = r if which == "r" else s
            changed = value ^ (1 << v.rng.randrange(value.bit_length() - 1))
            pair = (changed, s) if which == "r" else (r, changed)
            v.case(f"flip-{which}-{i}", digest, _der(*pair), raw, False)
        v.case(f"swapped-r-s-{i}", digest, _der(s, r), raw, False)
        v.case(f"wrong-key-{i}", digest, der, other[2], False)
        v.case(f"other-digest-{i}", other[0], der, raw, False)


def _scalars(v: _Vectors) -> None:
    """Chosen u1, u2 and keys: NAF carries past bit 255, runs of ones, the doubling and the
    cancelling branches of the point addition (Q = G, Q = -G), u1 = 0."""
    rng = v.rng
    special = [
        1,
        2,
        3,
        15,
        16,
        17,
        31,
        (N - 1) // 2,
        (N + 1) // 2,
        N - 1,
        N - 2,
        N - 16,
        2**128 - 1,
        2**128,
        2**255,
        2**255 - 1,
        2**256 - N,
        int("55" * 32, 16) % N,
        int("AA" * 32, 16) % N,
        int("F" * 56, 16),
        N - 2**128,
    ]
    keys = [("d1", 1), ("d2", 2), ("dn-1", N - 1), ("dn-2", N - 2), ("drandom", 1 + rng.randrange(N - 1))]
    for kname, d in keys:
        for j, a in enumerate(special):
            b = special[(j * 7 + 3) % len(special)]
            v.scalar_case(f"scalars-{kname}-equal-{j}", d, a, a)
            v.scalar_case(f"scalars-{kname}-opposite-{j}", d, a, N - a)
            v.scalar_case(f"scalars-{kname}-mixed-{j}", d, a, b)
            v.scalar_case(f"scalars-{kname}-u1-zero-{j}", d, 0, a)
        for j in range(4):
            # top NAF digits equal, lower ones not: Q = -G cancels to infinity on the way
            top = 1 << (255 - j)
            v.scalar_case(f"scalars-{kname}-near-{j}", d, top + 2 * j + 1, top + 2 * j + 3)


def _x_at_or_above_n(v: _Vectors) -> None:
    """R with n <= x(R) < p, so r = x(R) - n: only a verifier that also tries r + n accepts."""
    t = 1
    while _y_for(N + t) is None:
        t += 1
    big_r = (N + t, _y_for(N + t))
    for j in range(3):
        u1 = v.rng.randrange(N) if j else 0
        u2 = 1 + v.rng.randrange(N - 1)
        # Q = u2^-1 (R - u1 G), so that u1 G + u2 Q = R
        minus = _mul(u1, G)
        minus = None if minus is None else (minus[0], P - minus[1])
        q = _mul(pow(u2, -1, N), _add(big_r, minus))
        r = t
        s = r * pow(u2, -1, N) % N
        e = u1 * s % N
        v.case(f"x-above-n-{j}", e.to_bytes(32, "big"), _der(r, s), _raw(*q), True)
        v.case(f"x-above-n-wrong-r-{j}", e.to_bytes(32, "big"), _der(r + 1, s), _raw(*q), False)


def _bad_der(der: bytes) -> list:
    r, s = utils.decode_dss_signature(der)
    ri, si = _int_der(_minimal(r)), _int_der(_minimal(s))
    body = ri + si
    rb = r.to_bytes(32, "big").lstrip(b"\x00")
    cases = [
        ("empty", b""),
        ("trailing-byte", der + b"\x00"),
        ("trailing-byte-in-sequence", _seq(body + b"\x00")),
        ("long-form-sequence-length", b"\x30\x81" + bytes([len(body)]) + body),
        ("long-form-integer-length", _seq(b"\x02\x81" + bytes([len(ri) - 2]) + ri[2:] + si)),
        ("indefinite-length", b"\x30\x80" + body + b"\x00\x00"),
        ("length-too-long", b"\x30" + bytes([len(body) + 1]) + body),
        ("length-too-short", b"\x30" + bytes([len(body) - 1]) + body),
        ("truncated", der[:-1]),
        ("wrong-outer-tag", b"\x31" + der[1:]),
        ("wrong-integer-tag", _seq(b"\x03" + ri[1:] + si)),
        ("one-integer", _seq(ri)),
        ("three-integers", _seq(body + si)),
        ("empty-integer", _seq(b"\x02\x00" + si)),
        (
            "non-minimal-r",
            _seq(_int_der(b"\x00" + rb) + si) if rb[0] < 0x80 else _seq(_int_der(b"\x00\x00" + rb) + si),
        ),
        ("non-minimal-s", _seq(ri + _int_der(b"\x00\x00" + s.to_bytes(32, "big")))),
        ("negative-r", _seq(_int_der(_signed(-r)) + si)),
        ("negative-s", _seq(ri + _int_der(_signed(-s)))),
        ("minus-one-r", _seq(_int_der(_signed(-1)) + si)),
        ("r-zero", _seq(_int_der(b"\x00") + si)),
        ("s-zero", _seq(ri + _int_der(b"\x00"))),
        ("r-n", _seq(_int_der(_minimal(N)) + si)),
        ("s-n", _seq(ri + _int_der(_minimal(N)))),
        ("s-above-2^256", _seq(ri + _int_der(b"\x01" + s.to_bytes(32, "big")))),
        ("only-sequence", b"\x30\x00"),
        ("integers-without-sequence", body),
    ]
    if rb[0] >= 0x80:
        cases.append(("r-high-bit-unpadded", _seq(_int_der(rb) + si)))
    return cases


def _bad_keys(raw: bytes, rng: random.Random) -> list:
    x, y = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    t = 0
    while _y_for(t) is None:
        t += 1
    small = (t, _y_for(t))
    twist = rng.randrange(P)
    while _y_for(twist) is not None:
        twist = rng.randrange(P)
    return [
        ("y-plus-1", _raw(x, (y + 1) % P)),
        ("x-plus-1", _raw((x + 1) % P, y)),
        ("zeros", bytes(64)),
        ("x-not-reduced", _raw(small[0] + P, small[1])),  # (x mod p, y) is on the curve
        ("y-equals-p", _raw(x, P)),
        ("x-on-the-twist", _raw(twist, y)),
        ("too-short", raw[:63]),
        ("too-long", raw + b"\x00"),
        ("compressed", bytes([2 + (y & 1)]) + raw[:32]),
        ("prefix-2", b"\x02" + raw),
        ("prefix-6-hybrid", bytes([6 + (y & 1)]) + raw),
        ("empty", b""),
    ]


def write(folder: Path, good: int = 48, seed: int | None = None) -> Path:
    if good < 2:
        raise ValueError("good: at least 2 signatures (the wrong-key cases use another one)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    v = _Vectors(random.Random(seed))
    signed = _random_signatures(v, good)
    _variants(v, signed)
    _scalars(v)
    _x_at_or_above_n(v)
    digest, der, raw = signed[0]
    bad_der = [[name, data.hex()] for name, data in _bad_der(der)]
    for name, data in bad_der:
        if openssl_verdict(digest, bytes.fromhex(data), raw):
            raise AssertionError(f"OpenSSL accepts the malformed signature {name}")
    files = []
    key = ec.generate_private_key(CURVE)
    other = ec.generate_private_key(CURVE)
    for i, size in enumerate(FILE_SIZES):
        data = os.urandom(size)
        name = f"msg-{i}.bin"
        (folder / name).write_bytes(data)
        signer = other if i == len(FILE_SIZES) - 1 else key  # the last one: signed by another key
        signature = signer.sign(data, ec.ECDSA(hashes.SHA256()))
        verdict = openssl_verdict(hashlib.sha256(data).digest(), signature, raw_key(key.public_key()))
        files.append([name, base64.b64encode(signature).decode(), raw_key(key.public_key()).hex(), verdict])
    parsed = []
    for _, der_i, _ in signed:
        r, s = utils.decode_dss_signature(der_i)
        parsed.append([der_i.hex(), f"{r:x}", f"{s:x}"])
    doc = {
        "cases": v.cases,
        "bad_der": bad_der,
        "bad_keys": [[name, data.hex()] for name, data in _bad_keys(raw, v.rng)],
        "files": files,
        "parsed": parsed,
        "digest": digest.hex(),
        "key": raw.hex(),
        "der": der.hex(),
    }
    path = folder / "vectors.json"
    path.write_text(json.dumps(doc))
    # a few cases for a small heap, where vectors.json does not fit
    few = [c for c in v.cases if c[0].startswith("random-")][:3] + [c for c in v.cases if not c[4]][:2]
    (folder / "few.json").write_text(json.dumps(few))
    return path
