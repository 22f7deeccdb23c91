# jobs.scan: bounded, validating JSON scanner for AWS IoT Jobs messages. MIT licence.
"""Validate a Jobs message and pick out the fields the device needs, without building a tree.

    sc = Scanner(max_depth=32, max_str=1024)     # once, at boot
    f = sc.scan(buf, n)                          # whole payload in buf[:n]
    sc.begin(); sc.feed(chunk); ...; f = sc.end()   # payload bigger than the buffer

The whole payload is checked against RFC 8259 (strict UTF-8, escapes and surrogate pairs,
numbers, literals, nesting, nothing after the object). The first problem raises
ScanError(kind, offset); `feed` never raises: it keeps the first error and `end` raises it.
After an error `sc.fields` still holds what was read before it. The scanner is a byte-level
state machine, so a chunk may end anywhere (inside a string, an escape, a number or a UTF-8
sequence); it spends a bounded time on each byte and allocates only the values it returns.
"""

from micropython import const

# grammar states; the in-token states are the ones above _STR
_START = const(0)
_VALUE = const(1)
_VALUE_OR_CLOSE = const(2)
_KEY = const(3)
_KEY_OR_CLOSE = const(4)
_COLON = const(5)
_AFTER = const(6)
_DONE = const(7)
_STR = const(8)
_UTF8 = const(9)
_ESC = const(10)
_HEX = const(11)
_LOW_BS = const(12)
_LOW_U = const(13)
_NUM = const(14)
_LIT = const(15)

# number states: before the first character, after "-", after a leading 0, integer digits,
# after ".", fraction digits, after "e", after the exponent sign, exponent digits
_N_START = const(0)
_N_MINUS = const(1)
_N_ZERO = const(2)
_N_INT = const(3)
_N_DOT = const(4)
_N_FRAC = const(5)
_N_E = const(6)
_N_ESIGN = const(7)
_N_EXP = const(8)

MAX_NUMBER = const(100)  # longest number token accepted (RFC 8259 section 9 allows a limit)
_KEY_CAP = const(16)  # longer keys cannot be one of ours

# field slots: _NAME is the Fields attribute a slot fills, _TYPE the JSON type its value must have
_F_TOKEN = const(1)
_F_CODE = const(2)
_F_MESSAGE = const(3)
_F_EXEC = const(4)
_F_STATE = const(5)
_F_JOB = const(6)
_F_STATUS = const(7)
_F_VERSION = const(8)
_F_EXECNUM = const(9)
_F_DETAILS = const(10)
_F_DOC = const(11)
_F_SSTATUS = const(12)
_F_SVERSION = const(13)
_NAME = (
    "",
    "client_token",
    "code",
    "message",
    "",  # execution: has_execution is set when its object starts
    "",
    "job_id",
    "status",
    "version_number",
    "execution_number",
    "status_details",
    "document",
    "state_status",
    "state_version",
)
_T_STR = const(1)
_T_INT = const(2)
_T_OBJ = const(3)
_T_SPAN = const(4)
_TYPE = b"\x00\x01\x01\x01\x03\x03\x01\x01\x02\x02\x04\x04\x01\x02"
_TYPE_NAME = ("", "a string", "an integer", "an object", "")

_TOP_KEYS = (
    (b"clientToken", _F_TOKEN),
    (b"code", _F_CODE),
    (b"message", _F_MESSAGE),
    (b"execution", _F_EXEC),
    (b"executionState", _F_STATE),
)
_EXEC_KEYS = (
    (b"jobId", _F_JOB),
    (b"status", _F_STATUS),
    (b"versionNumber", _F_VERSION),
    (b"executionNumber", _F_EXECNUM),
    (b"statusDetails", _F_DETAILS),
    (b"jobDocument", _F_DOC),
)
_STATE_KEYS = ((b"status", _F_SSTATUS), (b"versionNumber", _F_SVERSION))

# 1 for a byte that may stand for itself inside a string: printable ASCII but " and backslash
_PLAIN = bytes(1 if 32 <= c < 128 and c != 34 and c != 92 else 0 for c in range(256))
# the byte each one-character escape stands for (0: not an escape)
_ESCAPE = bytearray(128)
for _c, _b in ((34, 34), (92, 92), (47, 47), (98, 8), (102, 12), (110, 10), (114, 13), (116, 9)):
    _ESCAPE[_c] = _b
_HEX_DIGIT = bytearray(b"\xff" * 256)
for _c in range(10):
    _HEX_DIGIT[48 + _c] = _c
for _c in range(6):
    _HEX_DIGIT[65 + _c] = _HEX_DIGIT[97 + _c] = 10 + _c
del _c, _b


class ScanError(ValueError):
    """Invalid or unacceptable message: `kind` says what, `offset` is the byte it was found at.

    kinds: syntax, depth, string, escape, utf8, number, truncated, type, duplicate.
    """

    def __init__(self, kind, offset, why):
        super().__init__("%s error at byte %d: %s" % (kind, offset, why))
        self.kind = kind
        self.offset = offset
        self.why = why


class Fields:
    """What the last scan found; one object, reset when a scan starts.

    After a failed scan it holds the values read before the error, so the caller can still
    answer an execution whose document cannot be read.
    """

    def __init__(self):
        self.reset()

    def reset(self):
        self.size = 0
        self.truncated = False
        self.client_token = None
        self.code = None
        self.message = None
        self.has_execution = False
        self.job_id = None
        self.status = None
        self.version_number = None
        self.execution_number = None
        self.document = None
        self.status_details = None
        self.state_status = None
        self.state_version = None


class Scanner:
    """One per device: its stack, scratch buffer and Fields are allocated here, once."""

    def __init__(self, max_depth=32, max_str=1024):
        if max_depth < 1 or max_str < 1:
            raise ValueError("max_depth and max_str must be positive")
        self.max_depth = max_depth
        self.max_str = max_str
        self.fields = Fields()
        self._stack = bytearray(max_depth + 1)  # the closing bracket of each open container
        self._scratch = bytearray(max(max_str, _KEY_CAP))
        self._reset(False)

    # -- public API ------------------------------------------------------------------------

    def scan(self, buf, n=-1):
        """Scan the whole message in buf[:n] (bytes, bytearray or memoryview); spans index buf."""
        self._reset(False)
        self.feed(buf, n)
        return self.end()

    def begin(self):
        """Start a message that arrives in chunks; its spans are not kept (truncated)."""
        self._reset(True)

    def feed(self, chunk, n=-1):
        """Scan the next chunk[:n]. Never raises for bad input: `end` reports it."""
        if n < 0:
            n = len(chunk)
        elif n > len(chunk):
            raise ValueError("n is beyond the end of the chunk")
        if self._error is None:
            try:
                self._run(chunk, 0, n)
            except ScanError as error:
                self._error = error
        self._base += n

    def end(self):
        """The Fields of a valid message; raises ScanError for an invalid one (Fields kept)."""
        fields = self.fields
        fields.size = self._base
        if self._stream:
            fields.truncated = True
            fields.document = fields.status_details = None
        if self._error is None and self._st != _DONE:
            self._error = ScanError("truncated", self._base, "the message ends early")
        if self._error is not None:
            raise self._error
        return fields

    # -- the machine ---------------------------------------------------------------------------

    def _reset(self, stream):
        self.fields.reset()
        self._stream = stream
        self._error = None
        self._base = 0
        self._st = _START
        self._depth = 0
        self._ctx = 0  # _F_EXEC or _F_STATE while inside that object (depth 2)
        self._seen = 0  # bit per field: a repeated key is an error
        self._slot = 0  # field named by the key just read; its value comes next
        self._vslot = 0  # field of the string or number being read
        self._span_slot = 0
        self._span_depth = -1
        self._span_start = 0
        self._is_key = False
        self._collect = False
        self._sn = 0
        self._cap = 0
        self._over = False
        self._sbeg = 0
        self._need = 0
        self._lo = 0
        self._hi = 0
        self._hexn = 0
        self._code = 0
        self._high = 0
        self._ns = _N_START
        self._nlen = 0
        self._nbeg = 0
        self._neg = False
        self._acc = 0
        self._lit = b""
        self._lp = 0

    def _run(self, buf, i, end):
        """Scan buf[i:end], carrying on from where the last chunk stopped.

        A branch that does not end a value continues the loop; one that does (a string, number
        or literal done, a container closed) falls through to the tail at the bottom.
        """
        st = self._st
        depth = self._depth
        is_key = self._is_key
        collect = self._collect  # the string being read is kept in the scratch buffer
        slot = self._slot  # field named by the key just read; its value comes next
        span_depth = self._span_depth  # depth at which the jobDocument/statusDetails value ends
        stack = self._stack
        plain = _PLAIN
        base = self._base
        try:
            while i < end:
                if st == _STR:
                    # every byte of a string is looked at anyway (control characters, UTF-8),
                    # so one table lookup per byte beats find() plus a check (docs/protocol.md)
                    j = i
                    while j < end and plain[buf[j]]:
                        j += 1
                    if collect and j > i:
                        self._copy(buf, i, j)
                    i = j
                    if i == end:
                        break
                    c = buf[i]
                    i += 1
                    if c != 34:
                        if c == 92:
                            st = _ESC
                        elif c < 32:
                            raise ScanError("string", base + i - 1, "control character in a string")
                        else:
                            self._utf8_lead(c, base + i - 1)
                            st = _UTF8
                        continue
                    if is_key:
                        if collect:
                            slot = self._key_done(depth)
                        if i < end and buf[i] == 58:  # the usual ':' right after a key
                            i += 1
                            st = _VALUE
                        else:
                            st = _COLON
                        continue
                    if collect:
                        self._string_done()
                else:
                    c = buf[i]
                    if st > _STR:
                        if st == _NUM:
                            i = self._number(buf, i, end)
                            if i == end:  # the number may go on in the next chunk
                                continue
                        elif st == _UTF8:
                            if c < self._lo or c > self._hi:
                                raise ScanError("utf8", base + i, "invalid UTF-8 in a string")
                            if collect:
                                self._put(c)
                            i += 1
                            self._need -= 1
                            if self._need:
                                self._lo = 0x80
                                self._hi = 0xBF
                            else:
                                st = _STR
                            continue
                        elif st == _ESC:
                            i += 1
                            if c == 117:
                                st = _HEX
                                self._hexn = 0
                                self._code = 0
                            else:
                                b = _ESCAPE[c] if c < 128 else 0
                                if not b:
                                    raise ScanError("escape", base + i - 1, "unknown escape")
                                if collect:
                                    self._put(b)
                                st = _STR
                            continue
                        elif st == _HEX:
                            st = self._hex(c, base + i)
                            i += 1
                            continue
                        elif st == _LIT:
                            lp = self._lp
                            if c != self._lit[lp]:
                                raise ScanError("syntax", base + i, "bad literal")
                            i += 1
                            lp += 1
                            self._lp = lp
                            if lp < len(self._lit):
                                continue
                        else:  # _LOW_BS, _LOW_U: a high surrogate must be followed by \uDC00-\uDFFF
                            if c != (92 if st == _LOW_BS else 117):
                                raise ScanError("escape", base + i, "high surrogate without a low one")
                            i += 1
                            if st == _LOW_BS:
                                st = _LOW_U
                            else:
                                st = _HEX
                                self._hexn = 0
                                self._code = 0
                            continue
                    elif c <= 32 and (c == 32 or c == 10 or c == 13 or c == 9):
                        i += 1
                        if c == 10:  # the indentation after a newline, in one inner loop
                            while i < end and buf[i] == 32:
                                i += 1
                        continue
                    elif st == _AFTER:
                        if c == 44:
                            st = _KEY if stack[depth] == 125 else _VALUE
                            i += 1
                            continue
                        if c != stack[depth]:
                            raise ScanError("syntax", base + i, "expected ',' or a closing bracket")
                        depth -= 1
                        i += 1
                    elif st == _KEY or st == _KEY_OR_CLOSE:
                        if c == 34:
                            st = _STR
                            is_key = True
                            collect = depth == 1 or (depth == 2 and self._ctx != 0)
                            self._collect = collect
                            if collect:
                                self._sn = 0
                                self._cap = _KEY_CAP
                                self._over = False
                                self._sbeg = base + i
                            i += 1
                            continue
                        if c != 125 or st == _KEY:
                            raise ScanError("syntax", base + i, "expected a key")
                        depth -= 1  # "{}"
                        i += 1
                    elif st == _COLON:
                        if c != 58:
                            raise ScanError("syntax", base + i, "expected ':'")
                        st = _VALUE
                        i += 1
                        continue
                    elif st == _DONE:
                        raise ScanError("syntax", base + i, "data after the end of the message")
                    elif c == 93 and st == _VALUE_OR_CLOSE:
                        depth -= 1  # "[]"
                        i += 1
                    else:  # a value starts: _START, _VALUE, _VALUE_OR_CLOSE
                        if st == _START and c != 123:
                            kind = "type" if c in b'["-0123456789tfn' else "syntax"
                            raise ScanError(kind, base + i, "a Jobs message is a JSON object")
                        keep = 0
                        if slot:
                            keep = self._value_starts(slot, c, depth, base + i)
                            span_depth = self._span_depth
                            slot = 0
                        if c == 34:
                            st = _STR
                            is_key = False
                            collect = keep != 0
                            self._collect = collect
                            if collect:
                                self._sn = 0
                                self._cap = self.max_str
                                self._over = False
                                self._sbeg = base + i
                            i += 1
                            continue
                        if c == 123 or c == 91:
                            if depth >= self.max_depth:
                                raise ScanError("depth", base + i, "nested deeper than %d" % self.max_depth)
                            depth += 1
                            stack[depth] = c + 2  # "}" or "]"
                            st = _KEY_OR_CLOSE if c == 123 else _VALUE_OR_CLOSE
                            if depth == 2:
                                self._ctx = keep  # _F_EXEC, _F_STATE or 0
                            i += 1
                            continue
                        if not (48 <= c <= 57 or c == 45):
                            if c != 116 and c != 102 and c != 110:
                                raise ScanError("syntax", base + i, "expected a value")
                            st = _LIT
                            self._lit = b"true" if c == 116 else (b"false" if c == 102 else b"null")
                            self._lp = 1
                            i += 1
                            continue
                        st = _NUM
                        self._ns = _N_START
                        self._nlen = 0
                        self._nbeg = base + i
                        self._neg = False
                        self._acc = 0
                        i = self._number(buf, i, end)
                        if i == end:  # the number may go on in the next chunk
                            continue
                # a value ended at buf[i]
                st = _AFTER if depth else _DONE
                if depth == span_depth:
                    span_depth = self._span_end(base + i)
        finally:
            self._st = st
            self._depth = depth
            self._is_key = is_key
            self._slot = slot
            self._span_depth = span_depth

    def _number(self, buf, i, end):
        """Continue a number at buf[i]; the index where it stopped (end: not finished yet)."""
        ns = self._ns
        start = i
        keep = self._vslot != 0  # an integer field: its value is added up
        while i < end:
            c = buf[i]
            if 48 <= c <= 57:
                if ns == _N_ZERO:
                    break  # "01": the number is "0", and what follows is a syntax error
                if ns <= _N_MINUS:
                    ns = _N_ZERO if c == 48 else _N_INT
                elif ns == _N_DOT:
                    ns = _N_FRAC
                elif ns == _N_E or ns == _N_ESIGN:
                    ns = _N_EXP
                j = i + 1
                if ns != _N_ZERO:
                    while j < end and 48 <= buf[j] <= 57:
                        j += 1
                # the length is checked before the digits are added up: a run too long for
                # MAX_NUMBER costs no big-int work, so every byte of any number costs the same
                if keep and ns == _N_INT and self._nlen + j - start <= MAX_NUMBER:
                    acc = self._acc
                    for k in range(i, j):
                        acc = acc * 10 + buf[k] - 48
                    self._acc = acc
                i = j
                continue
            if c == 46 and (ns == _N_ZERO or ns == _N_INT):
                ns = _N_DOT
            elif (c == 101 or c == 69) and (ns == _N_ZERO or ns == _N_INT or ns == _N_FRAC):
                ns = _N_E
            elif (c == 43 or c == 45) and ns == _N_E:
                ns = _N_ESIGN
            elif c == 45 and ns == _N_START:
                ns = _N_MINUS
                self._neg = True
            else:
                break
            i += 1
        nlen = self._nlen + i - start
        self._nlen = nlen
        if nlen > MAX_NUMBER:
            raise ScanError("number", self._nbeg, "number longer than %d" % MAX_NUMBER)
        if i == end:
            self._ns = ns
            return i
        if ns <= _N_MINUS or ns == _N_DOT or ns == _N_E or ns == _N_ESIGN:
            raise ScanError("number", self._base + i, "incomplete number")
        if keep:
            slot = self._vslot
            self._vslot = 0
            if ns > _N_INT:
                raise ScanError("type", self._nbeg, "field value must be an integer")
            setattr(self.fields, _NAME[slot], -self._acc if self._neg else self._acc)
        return i

    def _value_starts(self, slot, c, depth, offset):
        """Check the JSON type of a field's value (null means absent) and prepare to keep it.

        Returns the slot when the value is a string or an integer to keep or the object of
        `execution` or `executionState`, else 0.
        """
        if c == 110:
            return 0
        kind = _TYPE[slot]
        if kind == _T_SPAN:
            self._span_slot = slot
            self._span_depth = depth
            self._span_start = offset
            return 0
        if kind == _T_STR:
            ok = c == 34
        elif kind == _T_INT:
            ok = c == 45 or 48 <= c <= 57
        else:
            ok = c == 123
        if not ok:
            raise ScanError("type", offset, "field value must be " + _TYPE_NAME[kind])
        if kind == _T_OBJ:
            if slot == _F_EXEC:
                self.fields.has_execution = True
        else:
            self._vslot = slot
        return slot

    def _copy(self, buf, i, j):
        sn = self._sn
        cap = self._cap
        scratch = self._scratch
        while i < j and sn < cap:
            scratch[sn] = buf[i]
            sn += 1
            i += 1
        if i < j:
            self._over = True
        self._sn = sn

    def _put(self, b):
        sn = self._sn
        if sn < self._cap:
            self._scratch[sn] = b
            self._sn = sn + 1
        else:
            self._over = True

    def _utf8_lead(self, c, offset):
        """Check a UTF-8 lead byte (RFC 3629: no overlongs, surrogates or > U+10FFFF)."""
        if 0xC2 <= c <= 0xDF:
            need, lo, hi = 1, 0x80, 0xBF
        elif 0xE1 <= c <= 0xEF and c != 0xED:
            need, lo, hi = 2, 0x80, 0xBF
        elif c == 0xE0:
            need, lo, hi = 2, 0xA0, 0xBF
        elif c == 0xED:
            need, lo, hi = 2, 0x80, 0x9F
        elif c == 0xF0:
            need, lo, hi = 3, 0x90, 0xBF
        elif 0xF1 <= c <= 0xF3:
            need, lo, hi = 3, 0x80, 0xBF
        elif c == 0xF4:
            need, lo, hi = 3, 0x80, 0x8F
        else:
            raise ScanError("utf8", offset, "invalid UTF-8 in a string")
        self._need = need
        self._lo = lo
        self._hi = hi
        if self._collect:
            self._put(c)

    def _hex(self, c, offset):
        """One hex digit of \\uXXXX; returns the next state."""
        v = _HEX_DIGIT[c]
        if v > 15:
            raise ScanError("escape", offset, "bad \\u escape")
        code = self._code * 16 + v
        self._hexn += 1
        if self._hexn < 4:
            self._code = code
            return _HEX
        high = self._high
        if high:
            if not 0xDC00 <= code <= 0xDFFF:
                raise ScanError("escape", offset, "high surrogate without a low one")
            code = 0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00)
            self._high = 0
        elif 0xD800 <= code <= 0xDBFF:
            self._high = code
            return _LOW_BS
        elif 0xDC00 <= code <= 0xDFFF:
            raise ScanError("escape", offset, "low surrogate without a high one")
        if self._collect:
            put = self._put
            if code < 0x80:
                put(code)
            elif code < 0x800:
                put(0xC0 | code >> 6)
                put(0x80 | code & 0x3F)
            elif code < 0x10000:
                put(0xE0 | code >> 12)
                put(0x80 | code >> 6 & 0x3F)
                put(0x80 | code & 0x3F)
            else:
                put(0xF0 | code >> 18)
                put(0x80 | code >> 12 & 0x3F)
                put(0x80 | code >> 6 & 0x3F)
                put(0x80 | code & 0x3F)
        return _STR

    def _key_done(self, depth):
        """The field slot a kept key names (0: none of ours); a repeated one is an error."""
        if self._over:
            return 0
        if depth == 1:
            keys = _TOP_KEYS
        elif self._ctx == _F_EXEC:
            keys = _EXEC_KEYS
        else:
            keys = _STATE_KEYS
        sn = self._sn
        scratch = self._scratch
        for name, slot in keys:
            if len(name) == sn:
                k = 0
                while k < sn and scratch[k] == name[k]:
                    k += 1
                if k == sn:
                    bit = 1 << slot
                    if self._seen & bit:
                        raise ScanError("duplicate", self._sbeg, "repeated key " + name.decode())
                    self._seen |= bit
                    return slot
        return 0

    def _string_done(self):
        slot = self._vslot
        self._vslot = 0
        sn = self._sn
        if self._over:
            if slot != _F_MESSAGE:
                raise ScanError("string", self._sbeg, "longer than %d bytes" % self.max_str)
            sn = _whole_chars(self._scratch, sn)
        setattr(self.fields, _NAME[slot], str(memoryview(self._scratch)[:sn], "utf-8"))

    def _span_end(self, offset):
        setattr(self.fields, _NAME[self._span_slot], (self._span_start, offset))
        self._span_slot = 0
        self._span_depth = -1
        return -1


def _whole_chars(buf, n):
    """Length of buf[:n] without a UTF-8 sequence cut off at its end."""
    k = n
    while k > 0 and buf[k - 1] & 0xC0 == 0x80:
        k -= 1
    if k == 0:
        return n
    lead = buf[k - 1]
    want = 1 if lead < 0x80 else (2 if lead < 0xE0 else (3 if lead < 0xF0 else 4))
    return n if n - (k - 1) >= want else k - 1
