# jobs.details: statusDetails that AWS IoT Jobs always accepts. MIT licence.
"""Encode a statusDetails map as JSON the UpdateJobExecution / StartNext APIs accept, whatever
it holds — every update the device sends goes through `encode`.

    encode({"reason": "pin: 6 is a flash pin"}, 2048)   # b'{"reason":"pin: 6 is a flash pin"}'

AWS's rules: at most 10 pairs; keys 1-128 of [a-zA-Z0-9:_-]; values 1-1024 characters matching
[^\\p{C}]+ (no control, format, surrogate, private-use or unassigned code points); the payload
well-formed UTF-8. A job's author is untrusted and its text is echoed back (diag.echo, a
handler's result, a reason quoting a parameter), so nothing here fails: what breaks a rule is
replaced or dropped.

* keys: other characters become `_`, cut to 128; a key left empty or repeated is dropped;
* values: non-strings through str(); controls (C0, DEL, C1) become spaces; format characters
  (soft hyphen, bidi controls, zero-width ...), surrogates, private-use code points and
  noncharacters become U+FFFD; MicroPython's json.loads turns "\\ud83d\\ude80" into CESU-8 (a
  surrogate pair, each half UTF-8-encoded): re-encoded as the one 4-byte character it stands
  for; longer than 1024 characters: cut (a character outside the BMP counts as 2, as in the
  UTF-16 AWS counts in); empty: "-";
* pairs: `reason` first (MicroPython dicts are unordered), then at most nine more, and pairs
  stop where the encoded map would pass `limit` bytes (a value is cut to fit when at least
  its key and a few characters fit).
"""

from micropython import const

_MAX_PAIRS = const(10)
_MAX_KEY = const(128)
_MAX_CHARS = const(1024)
_REPLACEMENT = b"\xef\xbf\xbd"
_MIN_ROOM = const(16)  # a value cut to fewer bytes than this is not worth sending

# code points of Unicode category C above U+009F that are cheap to list (Cf, Cs, Co, Cn blocks);
# pairs (first, last), sorted
_C_RANGES = (
    0xAD, 0xAD,
    0x600, 0x605,
    0x61C, 0x61C,
    0x6DD, 0x6DD,
    0x70F, 0x70F,
    0x890, 0x891,
    0x8E2, 0x8E2,
    0x180E, 0x180E,
    0x200B, 0x200F,
    0x202A, 0x202E,
    0x2060, 0x206F,
    0xD800, 0xDFFF,
    0xE000, 0xF8FF,
    0xFDD0, 0xFDEF,
    0xFEFF, 0xFEFF,
    0xFFF0, 0xFFFB,
    0x110BD, 0x110BD,
    0x110CD, 0x110CD,
    0x13430, 0x1343F,
    0x1BCA0, 0x1BCA3,
    0x1D173, 0x1D17A,
    0x323B0, 0xE00FF,
    0xE01F0, 0x10FFFF,
)  # fmt: skip


def _is_c(cp):
    """True when code point cp >= 0xA0 is in category C (as far as the table knows)."""
    if cp & 0xFFFE == 0xFFFE:  # U+FFFE, U+FFFF and their twins in every plane
        return True
    r = _C_RANGES
    for i in range(0, len(r), 2):
        if cp < r[i]:
            return False
        if cp <= r[i + 1]:
            return True
    return False


def _plain(b):
    """True when bytes b are printable ASCII without '"' or '\\' (sent as they are)."""
    return not b or (min(b) >= 32 and max(b) < 127 and b.find(b'"') < 0 and b.find(b"\\") < 0)


def _key(k):
    b = (k if isinstance(k, str) else str(k)).encode()
    if len(b) <= _MAX_KEY and _plain(b):
        ok = True
        for c in b:
            if not (97 <= c <= 122 or 65 <= c <= 90 or 48 <= c <= 57 or c == 45 or c == 95 or c == 58):
                ok = False
                break
        if ok:
            return b
    out = bytearray()
    for c in b:
        if len(out) == _MAX_KEY:
            break
        if c >= 0x80 and c < 0xC0:
            continue  # a continuation byte: its character is already one "_"
        ok = 97 <= c <= 122 or 65 <= c <= 90 or 48 <= c <= 57 or c == 45 or c == 95 or c == 58
        out.append(c if ok else 95)
    return bytes(out)


def _text(b, room):
    """The JSON string body (no quotes) for the UTF-8 (or CESU-8) bytes b, within `room` bytes."""
    out = bytearray()
    chars = 0
    i = 0
    n = len(b)
    while i < n:
        c = b[i]
        if c < 0x80:
            i += 1
            if c < 32 or c == 127:
                piece = b" "
            elif c == 34:
                piece = b'\\"'
            elif c == 92:
                piece = b"\\\\"
            else:
                piece = None
            width = 1
            if piece is None:
                if len(out) + 1 > room or chars + 1 > _MAX_CHARS:
                    break
                out.append(c)
                chars += 1
                continue
        else:
            cp, size = _decode(b, i, n)
            i += size
            width = 2 if cp >= 0x10000 else 1
            if cp < 0xA0:
                piece = b" "  # C1 control
            elif cp < 0 or _is_c(cp):
                piece = _REPLACEMENT
            else:
                piece = _encode(cp)
        if len(out) + len(piece) > room or chars + width > _MAX_CHARS:
            break
        out += piece
        chars += width
    return out


def _decode(b, i, n):
    """(code point, bytes used) of the sequence at b[i]; (-1, 1) for a broken one. A CESU-8
    surrogate pair (two 3-byte sequences) gives the character it encodes."""
    c = b[i]
    if c >= 0xF0 and i + 3 < n:
        return ((c & 7) << 18 | (b[i + 1] & 63) << 12 | (b[i + 2] & 63) << 6 | b[i + 3] & 63), 4
    if c >= 0xE0 and i + 2 < n:
        cp = (c & 15) << 12 | (b[i + 1] & 63) << 6 | b[i + 2] & 63
        if 0xD800 <= cp <= 0xDBFF and i + 5 < n and b[i + 3] == 0xED and 0xB0 <= b[i + 4] <= 0xBF:
            low = 0xDC00 | (b[i + 4] & 15) << 6 | b[i + 5] & 63
            return 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00), 6
        return cp, 3
    if c >= 0xC0 and i + 1 < n:
        return (c & 31) << 6 | b[i + 1] & 63, 2
    return -1, 1


def _encode(cp):
    if cp < 0x800:
        return bytes((0xC0 | cp >> 6, 0x80 | cp & 63))
    if cp < 0x10000:
        return bytes((0xE0 | cp >> 12, 0x80 | cp >> 6 & 63, 0x80 | cp & 63))
    return bytes((0xF0 | cp >> 18, 0x80 | cp >> 12 & 63, 0x80 | cp >> 6 & 63, 0x80 | cp & 63))


def encode(details, limit):
    """statusDetails `details` (a dict; anything else counts as empty) as JSON bytes of at most
    `limit` bytes that AWS accepts; b"{}" when nothing is left."""
    if not isinstance(details, dict) or not details:
        return b"{}"
    out = bytearray(b"{")
    seen = []
    keys = list(details)
    if "reason" in details:
        keys.remove("reason")
        keys.insert(0, "reason")
    for k in keys:
        if len(seen) == _MAX_PAIRS:
            break
        key = _key(k)
        if not key or key in seen:
            continue
        v = details[k]
        b = (v if isinstance(v, str) else str(v)).encode()
        room = limit - len(out) - len(key) - 7  # ,"key":"" and the closing brace
        if room < min(len(b), _MIN_ROOM) or room < 1:
            break
        if len(b) <= room and len(b) <= _MAX_CHARS and _plain(b):
            text = b
        else:
            text = _text(b, room)
        if not text:
            text = b"-"
        if len(out) > 1:
            out.append(44)
        out += b'"'
        out += key
        out += b'":"'
        out += text
        out += b'"'
        seen.append(key)
    out.append(125)
    return bytes(out)
