# jobs.afrdoc: the AWS IoT OTA job document ("afr_ota"), read in bounded memory. MIT licence.
"""Read the document AWS IoT's CreateOTAUpdate makes, without building a tree of it:

    doc = afrdoc.parse(text)      # None: no top-level "afr_ota" key; afrdoc.Invalid(reason)
    doc["files"][0]["filesize"]

    {"afr_ota": {"protocols": ["MQTT"], "streamname": "AFR_OTA-…",
                 "files": [{"filepath": "/fw.bin", "filesize": 70000, "fileid": 0,
                            "certfile": "signer.crt", "fileType": 0, "sig-sha256-ecdsa": "MEUC…",
                            "update_data_url": "https://…", "auth_scheme": "aws.s3.presigned",
                            "attr": 0}]}}

becomes `{"operation": "afr_ota", "protocols": [...], "streamname": ..., "files": [{...}]}` holding
only those keys (a signature under another `sig-<hash>-<algorithm>` key is kept as `sig_other`),
every string cut to a fixed bound and at most MAX_FILES files: what the device keeps does not
grow with the document. Keys it does not know are skipped without being read into memory.

`Reader` walks JSON text in a buffer (bytes, bytearray or memoryview) by position; jobs.ops.stream
reads the stream service's answers with it too. It raises Invalid on anything that is not JSON,
so it is safe on text nobody has validated.
"""

from micropython import const

OPERATION = "afr_ota"
MAX_FILES = const(16)
_MAX_KEY = const(32)
_SIG = "sig-sha256-ecdsa"
# key -> (kind, bound): "s" string of at most bound bytes, "i" integer 0..bound
_FILE_KEYS = {
    "filepath": ("s", 255),
    "filesize": ("i", 0x7FFFFFFF),
    "fileid": ("i", 255),
    "certfile": ("s", 255),
    "fileType": ("i", 255),
    _SIG: ("s", 512),
    "update_data_url": ("s", 2048),
    "auth_scheme": ("s", 64),
    "attr": ("i", 0x7FFFFFFF),
}
_ESCAPES = {34: 34, 92: 92, 47: 47, 98: 8, 102: 12, 110: 10, 114: 13, 116: 9}


class Invalid(ValueError):
    """args[0]: why the document cannot be used (statusDetails.reason of the REJECTED job)."""


class Reader:
    """A cursor over JSON text buf[pos:end]."""

    def __init__(self, buf, pos=0, end=-1):
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end < 0 else end

    def ws(self):
        """Skip white space; the next byte (-1 at the end)."""
        buf = self.buf
        i = self.pos
        end = self.end
        while i < end:
            c = buf[i]
            if c != 32 and c != 10 and c != 13 and c != 9:
                self.pos = i
                return c
            i += 1
        self.pos = end
        return -1

    def take(self, c):
        """Consume the byte c (after white space); Invalid when something else comes."""
        if self.ws() != c:
            raise Invalid("not JSON: expected '" + chr(c) + "' at byte " + str(self.pos))
        self.pos += 1

    def more(self, close):
        """In an object or array just opened or after a member: True when a member follows
        (its comma consumed), False at the closing byte `close` (consumed)."""
        c = self.ws()
        if c == close:
            self.pos += 1
            return False
        if c == 44:
            self.pos += 1
        return True

    def key(self):
        """The next object key as str (longer than 32 bytes: ""), with its ':' consumed."""
        self.ws()
        start, end, plain = self._string()
        name = str(self.buf[start:end], "utf-8") if plain and end - start <= _MAX_KEY else ""
        self.take(58)
        return name

    def null(self):
        """True (and consumed) when the next value is null."""
        if self.ws() == 110:
            self.skip()
            return True
        return False

    def string(self, cap, what):
        """The next value, a string of at most `cap` bytes once decoded; Invalid otherwise."""
        if self.ws() != 34:
            raise Invalid(what + ": string expected")
        start, end, plain = self._string()
        if plain:
            if end - start > cap:
                raise Invalid(what + ": longer than " + str(cap) + " bytes")
            return str(self.buf[start:end], "utf-8")
        return self._unescape(start, end, cap, what)

    def integer(self, hi, what):
        """The next value, an integer 0..hi; Invalid otherwise."""
        buf = self.buf
        i = self.ws_pos()
        end = self.end
        n = 0
        digits = 0
        while i < end and 48 <= buf[i] <= 57:
            n = n * 10 + buf[i] - 48
            digits += 1
            i += 1
            if n > hi:
                raise Invalid(what + ": at most " + str(hi))
        if not digits or (i < end and buf[i] in b".eE"):
            raise Invalid(what + ": integer 0.." + str(hi) + " expected")
        self.pos = i
        return n

    def ws_pos(self):
        self.ws()
        return self.pos

    def skip(self):
        """Step over the next value whatever it is (strings, numbers, literals, containers),
        reading nothing into memory."""
        buf = self.buf
        end = self.end
        depth = 0
        while True:
            c = self.ws()
            if c < 0:
                raise Invalid("not JSON: the text ends inside a value")
            if c == 34:
                self._string()
            elif c == 123 or c == 91:
                depth += 1
                self.pos += 1
                continue
            elif c == 125 or c == 93:
                depth -= 1
                self.pos += 1
            elif c == 44 or c == 58:
                self.pos += 1
                continue
            else:  # a number or a literal: up to the next delimiter
                i = self.pos
                while i < end and buf[i] not in b',]}: \t\r\n"':
                    i += 1
                if i == self.pos:
                    raise Invalid("not JSON: unexpected byte at " + str(i))
                self.pos = i
            if depth <= 0:
                if depth < 0:
                    raise Invalid("not JSON: a closing bracket without an opening one")
                return

    def _string(self):
        """(start, end, plain) of the string at pos (its quotes consumed): plain when it holds
        no escape."""
        buf = self.buf
        i = self.pos
        end = self.end
        if i >= end or buf[i] != 34:
            raise Invalid("not JSON: string expected at byte " + str(i))
        i += 1
        start = i
        plain = True
        while i < end:
            c = buf[i]
            if c == 34:
                self.pos = i + 1
                return start, i, plain
            if c == 92:
                plain = False
                i += 1
            i += 1
        raise Invalid("not JSON: unterminated string")

    def _unescape(self, start, end, cap, what):
        """The string buf[start:end] with its escapes decoded, as str."""
        buf = self.buf
        out = bytearray()
        i = start
        while i < end:
            c = buf[i]
            i += 1
            if c != 92:
                out.append(c)
            else:
                c = buf[i]
                i += 1
                if c != 117:
                    b = _ESCAPES.get(c)
                    if b is None:
                        raise Invalid(what + ": bad escape")
                    out.append(b)
                else:
                    code = int(str(buf[i : i + 4], "ascii"), 16)
                    i += 4
                    if 0xD800 <= code < 0xDC00 and i + 6 <= end and buf[i] == 92 and buf[i + 1] == 117:
                        code = 0x10000 + ((code - 0xD800) << 10) + int(str(buf[i + 2 : i + 6], "ascii"), 16) - 0xDC00
                        i += 6
                    out.extend(chr(code).encode())
            if len(out) > cap:
                raise Invalid(what + ": longer than " + str(cap) + " bytes")
        try:
            return str(out, "utf-8")
        except UnicodeError:
            raise Invalid(what + ": not UTF-8")


def parse(text):
    """The afr_ota document in `text` (bytes of one JSON object), or None when its top level
    has no "afr_ota" key; Invalid(reason) when that key's value is not what AWS sends."""
    r = Reader(memoryview(text))  # slices of a memoryview copy nothing
    r.take(123)
    doc = None
    while r.more(125):
        if r.key() == "afr_ota" and doc is None:
            doc = _ota(r)
        else:
            r.skip()
    return doc


def _ota(r):
    doc = {"operation": OPERATION, "protocols": [], "files": []}
    if r.null():
        raise Invalid("afr_ota: object expected")
    r.take(123)
    while r.more(125):
        key = r.key()
        if r.null():
            continue
        if key == "protocols":
            r.take(91)
            while r.more(93):
                if len(doc["protocols"]) >= 4:
                    raise Invalid("afr_ota.protocols: at most 4 items")
                doc["protocols"].append(r.string(16, "afr_ota.protocols"))
        elif key == "streamname":
            doc["streamname"] = r.string(128, "afr_ota.streamname")
        elif key == "files":
            if r.ws() != 91:
                raise Invalid("afr_ota.files: list expected")
            r.take(91)
            while r.more(93):
                if len(doc["files"]) >= MAX_FILES:
                    raise Invalid("afr_ota.files: at most " + str(MAX_FILES) + " files")
                doc["files"].append(_file(r, "afr_ota.files[" + str(len(doc["files"])) + "]"))
        else:
            r.skip()
    return doc


def _file(r, where):
    if r.ws() != 123:
        raise Invalid(where + ": object expected")
    r.take(123)
    entry = {}
    while r.more(125):
        key = r.key()
        spec = _FILE_KEYS.get(key)
        if r.null():
            continue
        if spec is not None:
            what = where + "." + key
            entry[key] = r.string(spec[1], what) if spec[0] == "s" else r.integer(spec[1], what)
        elif key.startswith("sig-"):
            entry["sig_other"] = key  # a signature this device cannot check: the op says so
            r.skip()
        else:
            r.skip()
    return entry
