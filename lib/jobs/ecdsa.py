# jobs.ecdsa: ECDSA P-256 signature verification in plain MicroPython. MIT licence.
"""Verify an ECDSA signature over the NIST P-256 curve (secp256r1, prime256v1), the
`sig-sha256-ecdsa` of AWS IoT code signing:

    key = ecdsa.public_key(raw)            # 64 bytes X||Y (or 65: 0x04||X||Y); ValueError if off the curve
    der = ecdsa.from_base64(doc_signature)  # ValueError if not base64
    ok = ecdsa.verify(hasher.digest(), der, key)

`verify` takes the 32-byte SHA-256 of the whole file, so a caller that hashed the file while
writing it (hashlib.sha256, one block at a time) never holds the file in memory. It returns
False for any signature that does not verify, a malformed DER encoding included.

Only public data goes in, so timing needs no protection. Memory stays constant: Jacobian
coordinates, u1*G + u2*Q in one pass of 256 doublings (Shamir's trick) over width-5 NAF digits
of both scalars, with 8 precomputed odd multiples of each point, made affine together with one
inversion. No table grows with the input.
"""

import binascii

from micropython import const

# the curve y^2 = x^3 - 3x + b over GF(p), base point G of prime order n (SEC 2, FIPS 186)
_P = const(0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF)
_N = const(0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551)
_B = const(0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B)
_GX = const(0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296)
_GY = const(0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5)
_W = const(5)  # NAF width: digits are odd, |d| < 2^(_W-1)
_TABLE = const(8)  # 2^(_W-2) odd multiples: 1P, 3P, ..., 15P
_DIGITS = const(257)  # a 256-bit scalar has at most 257 NAF digits


def public_key(raw):
    """(x, y) of the uncompressed point `raw` (64 bytes X||Y, or 65 starting 0x04); ValueError
    naming the problem when it is not a point of P-256."""
    if len(raw) == 65 and raw[0] == 4:
        raw = raw[1:]
    if len(raw) != 64:
        raise ValueError("64 bytes X||Y expected, got " + str(len(raw)))
    x = int.from_bytes(raw[:32], "big")
    y = int.from_bytes(raw[32:], "big")
    if x >= _P or y >= _P or (y * y - x * x * x + 3 * x - _B) % _P:
        raise ValueError("not a point on P-256")
    return x, y


def from_base64(text):
    """The bytes of a base64 string (str or bytes); ValueError when it is not base64."""
    if isinstance(text, str):
        text = text.encode()  # some ports take only a buffer
    try:
        return binascii.a2b_base64(text)
    except ValueError:
        raise ValueError("not base64")


def _der_int(der, pos, end):
    """(value, next position) of the DER INTEGER at der[pos]; ValueError unless it is a minimal,
    positive encoding that ends by `end`."""
    if end - pos < 3 or der[pos] != 2:
        raise ValueError("INTEGER expected")
    size = der[pos + 1]
    pos += 2
    if size < 1 or size > 33 or pos + size > end:
        raise ValueError("bad INTEGER length")
    if der[pos] & 0x80:
        raise ValueError("negative INTEGER")
    if size > 1 and der[pos] == 0 and not der[pos + 1] & 0x80:
        raise ValueError("INTEGER not minimally encoded")
    return int.from_bytes(der[pos : pos + size], "big"), pos + size


def signature(der):
    """(r, s) of a DER ECDSA-Sig-Value (SEQUENCE of two INTEGERs); ValueError naming the
    problem when the encoding is not strict DER or r, s are not in 1..n-1."""
    # the largest encoding is 72 bytes, so a valid one always has a one-byte length
    if not 8 <= len(der) <= 72 or der[0] != 0x30 or der[1] != len(der) - 2:
        raise ValueError("not a DER SEQUENCE")
    end = len(der)
    r, pos = _der_int(der, 2, end)
    s, pos = _der_int(der, pos, end)
    if pos != end:
        raise ValueError("bytes after the second INTEGER")
    if not 0 < r < _N or not 0 < s < _N:
        raise ValueError("r or s out of range 1..n-1")
    return r, s


def _inverse(a, m):
    """a^-1 mod m for a coprime to m (extended Euclid: faster than pow(a, m-2, m) here)."""
    r0, r1 = m, a % m
    t0, t1 = 0, 1
    while r1:
        q = r0 // r1
        r0, r1 = r1, r0 - q * r1
        t0, t1 = t1, t0 - q * t1
    return t0 % m


def _naf(k, out):
    """Width-_W NAF of 0 <= k < 2^256 into the zeroed out[0.._DIGITS), least significant first,
    each digit as a byte in two's complement; returns the number of digits up to the top
    non-zero one."""
    kb = k.to_bytes(34, "little")  # two spare bytes: a window may reach past bit 255
    carry = 0
    bit = 0
    top = 0
    while bit < 256:
        if (kb[bit >> 3] >> (bit & 7)) & 1 == carry:
            bit += 1
            continue
        word = (((kb[bit >> 3] | kb[(bit >> 3) + 1] << 8) >> (bit & 7)) & ((1 << _W) - 1)) + carry
        carry = word >> (_W - 1)
        out[bit] = (word - (carry << _W)) & 0xFF
        top = bit + 1
        bit += _W
    if carry:
        # only a window ending at or below bit 256 can carry, and bits above it were all ones
        out[256] = 1
        return _DIGITS
    return top


def _add(x1, y1, z1, x2, y2):
    """Jacobian (x1, y1, z1) + affine (x2, y2); z1 == 0 is the point at infinity."""
    p = _P
    if not z1:
        return x2, y2, 1
    zz = z1 * z1 % p
    h = (x2 * zz - x1) % p
    r = (y2 * (z1 * zz % p) - y1) % p
    if not h:
        if r:
            return 0, 1, 0
        return _double(x2, y2, 1)
    hh = h * h % p
    hhh = h * hh % p
    v = x1 * hh % p
    x3 = (r * r - hhh - (v << 1)) % p
    return x3, (r * (v - x3) - y1 * hhh) % p, z1 * h % p


def _add_digit(x, y, z, d, table):
    """Jacobian (x, y, z) + d*P for a NAF digit `d` (a byte, two's complement) and `table`, the
    affine odd multiples of P."""
    if d < 128:
        pt = table[d >> 1]
        return _add(x, y, z, pt[0], pt[1])
    pt = table[(256 - d) >> 1]
    return _add(x, y, z, pt[0], _P - pt[1])


def _double(x, y, z):
    """2 * Jacobian (x, y, z) on a curve with a = -3 (dbl-2001-b)."""
    p = _P
    zz = z * z % p
    yy = y * y % p
    t = x * yy % p
    m = 3 * (x - zz) * (x + zz) % p
    z = (y * z << 1) % p
    x = (m * m - (t << 3)) % p
    return x, (m * ((t << 2) - x) - (yy * yy << 3)) % p, z


def _affine(points):
    """Make a list of Jacobian points [x, y, z] affine in place with one inversion."""
    p = _P
    acc = 1
    prefix = []
    for pt in points:
        prefix.append(acc)
        acc = acc * pt[2] % p
    inv = _inverse(acc, p)
    for i in range(len(points) - 1, -1, -1):
        pt = points[i]
        zi = inv * prefix[i] % p
        inv = inv * pt[2] % p
        zi2 = zi * zi % p
        pt[0] = pt[0] * zi2 % p
        pt[1] = pt[1] * (zi2 * zi % p) % p
        pt[2] = 1


def _tables(qx, qy):
    """Affine odd multiples [[x, y, 1] of 1P, 3P, ..., (2*_TABLE-1)P] of G and of Q."""
    twice = [list(_double(_GX, _GY, 1)), list(_double(qx, qy, 1))]
    _affine(twice)
    tables = ([[_GX, _GY, 1]], [[qx, qy, 1]])
    jacobian = []
    for table, d in zip(tables, twice):
        for _ in range(_TABLE - 1):
            last = table[-1]
            x, y, z = _add(last[0], last[1], last[2], d[0], d[1])
            pt = [x, y, z]
            table.append(pt)
            jacobian.append(pt)
    _affine(jacobian)
    return tables


def verify(digest, der, key):
    """True when `der` is a valid signature of the 32-byte `digest` under `key` (x, y) from
    public_key(); False for any other signature, a malformed one included."""
    if len(digest) != 32:
        raise ValueError("digest: 32 bytes expected")
    try:
        r, s = signature(der)
    except ValueError:
        return False
    p = _P
    n = _N
    w = _inverse(s, n)
    u1 = int.from_bytes(digest, "big") * w % n
    u2 = r * w % n
    naf1 = bytearray(_DIGITS)
    naf2 = bytearray(_DIGITS)
    top = max(_naf(u1, naf1), _naf(u2, naf2))
    tg, tq = _tables(key[0], key[1])
    x = y = 0
    z = 0
    for i in range(top - 1, -1, -1):
        if z:
            x, y, z = _double(x, y, z)
        d = naf1[i]
        if d:
            x, y, z = _add_digit(x, y, z, d, tg)
        d = naf2[i]
        if d:
            x, y, z = _add_digit(x, y, z, d, tq)
    if not z:
        return False
    # x(R) mod n == r without an inversion: X == r' * Z^2 for r' = r or r + n (when below p)
    zz = z * z % p
    if (r * zz - x) % p == 0:
        return True
    return r + n < p and ((r + n) * zz - x) % p == 0
