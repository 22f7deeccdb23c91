"""Property test: jobs.scan (in MicroPython) against CPython's json, on generated documents.

CPython writes thousands of Jobs-shaped documents (random nesting, unicode, escapes, surrogate
pairs, numbers, big ints, extra keys at every level) and mutations of them (truncated, bad
escapes, lone surrogates, invalid UTF-8, deep nesting, huge numbers, control characters,
trailing garbage...). One MicroPython process scans them all, whole and streamed in random
chunks (tests/host/mp_scan_driver.py). The oracle is CPython's json plus the scanner's
documented rules (docs/protocol.md): where CPython accepts what RFC 8259 or the Jobs contract
refuses, the scanner must raise the ScanError kind the rule names.
"""

import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("mp_scan_driver.py")
SEED = 20261128
MAX_DEPTH, MAX_STR, MAX_NUMBER = 32, 1024, 100  # the Scanner() defaults and scan.MAX_NUMBER
VALID_WANTED, REJECTED_WANTED = 2000, 2000

TOP = {"clientToken": "str", "code": "str", "message": "msg"}
TOP_OBJECTS = ("execution", "executionState")
EXECUTION = {"jobId": "str", "status": "str", "versionNumber": "int", "executionNumber": "int"}
STATE = {"status": "str", "versionNumber": "int"}
STATUSES = ("QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "TIMED_OUT", "REJECTED", "CANCELED")
CODES = ("InvalidTopic", "InvalidJson", "InvalidRequest", "VersionMismatch", "ResourceNotFound")


def micropython() -> str:
    explicit = os.environ.get("MICROPYTHON")
    if explicit:
        return explicit
    return str(Path(sys.executable).parent / "micropython")


# -- documents as values ---------------------------------------------------------------------


class Obj(list):
    """A JSON object as its list of (key, value) pairs: keeps order and repeated keys."""


class Raw(str):
    """JSON text written as it is (a planted NaN, a lone surrogate escape, a huge number)."""


def text(rng: random.Random, longest: int = 12) -> str:
    pools = (
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-:.",
        '"\\/\b\f\n\r\t\x00\x01\x1f\x7f',
        "\u00e9\u00fc\u00df\u20ac\u4e2d\u6587\u0416\ufeff\uffff\u0800\u07ff",
        "\U0001f600\U0001f680\U00010000\U0010ffff\U0001d11e",
    )
    weights = (80, 8, 8, 4)
    parts = []
    for pool in rng.choices(pools, weights, k=rng.randint(1, 3)):
        parts.extend(rng.choices(pool, k=rng.randint(0, longest)))
    return "".join(parts)[:longest]


def number(rng: random.Random):
    kind = rng.random()
    if kind < 0.45:
        return rng.randint(-1000, 10**6)
    if kind < 0.6:
        return rng.randint(-(10**40), 10**40)  # big ints
    if kind < 0.75:
        return rng.choice((0, -0.0, 0.5, -1.25e-7, 3.0e30, 1e308, 5e-324, 123456.789))
    return rng.uniform(-1e6, 1e6)


def value(rng: random.Random, depth: int, width: int = 5):
    kind = rng.random()
    if depth <= 0 or kind < 0.45:
        return rng.choice((text(rng), text(rng, 60), number(rng), True, False, None))
    if kind < 0.75:
        return Obj((text(rng, 8), value(rng, depth - 1, width)) for _ in range(rng.randint(0, width)))
    return [value(rng, depth - 1, width) for _ in range(rng.randint(0, width))]


def job_id(rng: random.Random) -> str:
    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
    return "".join(rng.choice(chars) for _ in range(rng.randint(1, 64)))


def with_extras(rng: random.Random, pairs: list, depth: int) -> Obj:
    """Add unrelated keys (some named like ours) and shuffle."""
    decoys = ("jobid", "JobId", "jobId ", "status\u00e9", "execution_", "version", "clienttoken")
    for _ in range(rng.randint(0, 4)):
        key = rng.choice(decoys) if rng.random() < 0.3 else text(rng, 10)
        pairs.append((key, value(rng, depth)))
    rng.shuffle(pairs)
    return Obj(pairs)


def execution(rng: random.Random) -> Obj:
    pairs = [
        ("jobId", job_id(rng)),
        ("status", rng.choice(STATUSES)),
        ("queuedAt", rng.randint(1_600_000_000, 1_900_000_000)),
        ("lastUpdatedAt", rng.randint(1_600_000_000, 1_900_000_000)),
        ("versionNumber", rng.randint(1, 10 ** rng.randint(1, 25))),
        ("executionNumber", rng.randint(-5, 10**6)),
    ]
    pairs = [p for p in pairs if rng.random() < 0.9]
    if rng.random() < 0.6:
        pairs.append(
            ("statusDetails", Obj((text(rng, 10), text(rng, 40)) for _ in range(rng.randint(0, 10))))
        )
    if rng.random() < 0.85:
        pairs.append(("jobDocument", value(rng, rng.randint(0, 4), rng.randint(1, 5))))
    # the same names deeper down must not be taken for ours
    if rng.random() < 0.2:
        pairs.append(("nested", Obj([("jobId", 5), ("execution", Obj([("jobId", "x")]))])))
    return with_extras(rng, pairs, 3)


def message(rng: random.Random) -> Obj:
    shape = rng.choice(("notify-next", "start-next", "update", "rejected", "get", "notify", "empty"))
    pairs = [("timestamp", rng.randint(0, 2**33))]
    if shape in ("start-next", "update", "rejected", "get") and rng.random() < 0.9:
        pairs.append(
            ("clientToken", rng.choice((f"{rng.getrandbits(32):08x}-{rng.randint(1, 10**9)}", text(rng))))
        )
    if shape in ("notify-next", "start-next") and rng.random() < 0.85:
        pairs.append(("execution", execution(rng)))
    if shape == "rejected":
        pairs.append(("code", rng.choice(CODES)))
        pairs.append(("message", rng.choice((text(rng, 80), text(rng, 400) * rng.randint(1, 6)))))
    if shape in ("update", "rejected") and rng.random() < 0.5:
        state = [("status", rng.choice(STATUSES)), ("versionNumber", rng.randint(1, 99))]
        pairs.append(("executionState", with_extras(rng, state, 2)))
    if shape == "get":
        summary = Obj([("jobId", job_id(rng)), ("versionNumber", 1), ("executionNumber", 1)])
        pairs += [("inProgressJobs", [summary] * rng.randint(0, 3)), ("queuedJobs", [summary])]
    if shape == "notify":
        pairs.append(("jobs", Obj([("QUEUED", [Obj([("jobId", job_id(rng))])])])))
    return with_extras(rng, pairs, 4)


# -- planted rule breaks CPython accepts ----------------------------------------------------


def plant(rng: random.Random, doc: Obj):
    """Break one of the scanner's rules in a way CPython still parses."""
    how = rng.choice(("type", "duplicate", "surrogate", "constant", "depth", "long", "bignum", "top"))
    ex = next((v for k, v in doc if k == "execution" and isinstance(v, Obj)), None)
    if how == "type":
        bad = rng.choice(([], Obj(), 1.5, "7", True, 12, 1e3))
        target = ex if ex is not None and rng.random() < 0.6 else doc
        names = list(EXECUTION) if target is ex else [*TOP, *TOP_OBJECTS]
        target.append((rng.choice(names), bad))
    elif how == "duplicate":
        target = ex if ex is not None and ex and rng.random() < 0.5 else doc
        named = [p for p in target if p[0] in TOP or p[0] in TOP_OBJECTS or p[0] in EXECUTION]
        if named:
            target.insert(rng.randint(0, len(target)), rng.choice(named))
    elif how == "surrogate":
        lone = Raw(rng.choice(('"\\ud800"', '"a\\udfffb"', '"\\ud83d\\u0041"', '"\\ude00\\ud83d"')))
        doc.insert(rng.randint(0, len(doc)), (text(rng), lone))
    elif how == "constant":
        doc.append((text(rng), Raw(rng.choice(("NaN", "Infinity", "-Infinity")))))
    elif how == "depth":
        deep = rng.randint(MAX_DEPTH, MAX_DEPTH + 5)
        doc.append(("deep", Raw("[" * deep + "]" * deep)))
    elif how == "long":
        doc.append(("clientToken", "x" * rng.randint(MAX_STR + 1, MAX_STR + 50)))
    elif how == "bignum":
        doc.append(("big", Raw(str(rng.randint(10**MAX_NUMBER, 10 ** (MAX_NUMBER + 50))))))
    else:
        return [doc]
    return doc


# -- serialising with random whitespace and escapes -------------------------------------------

SHORT = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def ws(rng: random.Random) -> str:
    return "" if rng.random() < 0.8 else "".join(rng.choice(" \t\n\r") for _ in range(rng.randint(1, 3)))


def u_escape(rng: random.Random, code: int) -> str:
    h = f"{code:04x}"
    return "\\u" + (h.upper() if rng.random() < 0.5 else h)


def string(rng: random.Random, s: str) -> str:
    how = rng.random()
    if how < 0.6:
        return json.dumps(s, ensure_ascii=False)
    if how < 0.75:
        return json.dumps(s)  # every non-ASCII character escaped, surrogate pairs for the rest
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch in SHORT and (code >= 0x20 or rng.random() < 0.7):
            out.append(SHORT[ch])
        elif code < 0x20 or rng.random() < 0.08:
            if code >= 0x10000:
                code -= 0x10000
                out.append(u_escape(rng, 0xD800 + (code >> 10)) + u_escape(rng, 0xDC00 + (code & 0x3FF)))
            else:
                out.append(u_escape(rng, code))
        elif ch == "/" and rng.random() < 0.5:
            out.append("\\/")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def num(rng: random.Random, x) -> str:
    if isinstance(x, int):
        return f"{x}E0" if rng.random() < 0.02 else str(x)  # 7E0 is a float: a type error in our fields
    if rng.random() < 0.5:
        return repr(x)
    return rng.choice(("{:e}", "{:E}", "{:.17g}")).format(x)


def dump(rng: random.Random, v) -> str:
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, str):
        return string(rng, v)
    if v is True or v is False or v is None:
        return {True: "true", False: "false", None: "null"}[v]
    if isinstance(v, (int, float)):
        return num(rng, v)
    if isinstance(v, Obj):
        items = [ws(rng) + string(rng, k) + ws(rng) + ":" + ws(rng) + dump(rng, x) + ws(rng) for k, x in v]
        return "{" + ",".join(items) + ws(rng) + "}"
    return "[" + ",".join(ws(rng) + dump(rng, x) + ws(rng) for x in v) + ws(rng) + "]"


# -- malformed input -------------------------------------------------------------------------

BAD_UTF8 = (b"\x80", b"\xbf", b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xed\xbf\xbf")
BAD_UTF8 += (
    b"\xf0\x80\x80\x80",
    b"\xf4\x90\x80\x80",
    b"\xf5\x80\x80\x80",
    b"\xff",
    b"\xfe",
    b"\xc3",
    b"\xe2\x82",
)
BAD_UTF8 += (b"\xf0\x9f\x98",)
BAD_TEXT = (b"\\x", b"\\u12G4", b"\\U0041", b"\\u00", b"\\", b"\\ud800", b"\\udc00", b"\\ud800\\u0041")
BAD_TOKENS = (b"01", b"+1", b".5", b"1.", b"1e", b"1e+", b"-", b"--1", b"0x10", b"tru", b"nul", b"True")
BAD_TOKENS += (b"'a'", b"NaN", b"undefined", b"1 2", b"[1,]", b'{"a":1,}', b"{,}", b"//c", b"/*c*/")


def mutate(rng: random.Random, doc: bytes) -> bytes:
    how = rng.randrange(12)
    at = rng.randint(0, len(doc))
    quotes = [i for i in range(len(doc)) if doc[i] == 0x22]
    inside = (rng.choice(quotes) + 1) if quotes else at
    if how == 0:
        return doc[: rng.randint(0, max(0, len(doc) - 1))]  # truncated
    if how == 1:
        return doc[:inside] + rng.choice(BAD_UTF8) + doc[inside:]
    if how == 2:
        return doc[:inside] + rng.choice(BAD_TEXT) + doc[inside:]
    if how == 3:
        return doc[:inside] + bytes([rng.randrange(0x20)]) + doc[inside:]  # raw control character
    if how == 4:
        return doc + rng.choice((b"x", b"}", b"{}", b",", b"\x00", b" 1", b"]", b'"', b"\xc3\xa9"))
    if how == 5:
        return doc[:at] + rng.choice(BAD_TOKENS) + doc[at:]
    if how == 6:
        return doc[:at] + bytes([rng.randrange(256)]) + doc[at + 1 :]  # a random byte replaced
    if how == 7:
        return doc[:at] + doc[at + 1 :]  # a byte deleted
    if how == 8:
        return doc[:at] + doc[at : at + 1] * 2 + doc[at + 1 :]  # a byte doubled
    if how == 9:
        deep = rng.choice((100, 1000))
        return b'{"d":' + b"[" * deep + b"]" * (deep - rng.randint(0, 1)) + b"}"
    if how == 10:
        digits = rng.choice((5000, 4301))
        return b'{"n":' + str(rng.randint(1, 9)).encode() + b"7" * digits + b"}"
    return rng.choice((b"", b" ", b"\n\t", b"\xef\xbb\xbf{}", b"nul", b"{", b"}", b'{"a"', b'{"a":}', b"[]"))


# -- the oracle ------------------------------------------------------------------------------


class _Constant(Exception):
    pass


def analyse(doc: bytes):
    """("reject", None) when CPython refuses the bytes; ("err", kinds) when a rule of the
    scanner refuses them; else ("ok", expected fields)."""
    try:
        txt = doc.decode("utf-8")  # strict: RFC 3629, unlike json.loads(bytes)'s surrogatepass
        plain = json.loads(txt)
    except (ValueError, RecursionError):
        return "reject", None
    kinds: set[str] = set()

    def on_number(token: str):
        if len(token) > MAX_NUMBER:
            kinds.add("number")
        return float(token) if any(c in token for c in ".eE") else int(token)

    def on_constant(token: str):
        kinds.update(("syntax", "number") if token.startswith("-") else ("syntax",))
        return None

    tree = json.loads(
        txt, object_pairs_hook=Obj, parse_int=on_number, parse_float=on_number, parse_constant=on_constant
    )
    walk(tree, 0, kinds)
    if not isinstance(tree, Obj):
        kinds.add("type")
        return "err", kinds
    check_fields(tree, TOP, kinds)
    for key in TOP_OBJECTS:
        for v in values(tree, key):
            if v is not None and not isinstance(v, Obj):
                kinds.add("type")
            elif isinstance(v, Obj):
                check_fields(v, EXECUTION if key == "execution" else STATE, kinds)
                if key == "execution":
                    check_fields(v, {"statusDetails": "any", "jobDocument": "any"}, kinds)
        if len(values(tree, key)) > 1:
            kinds.add("duplicate")
    if kinds:
        return "err", kinds
    return "ok", expected_fields(plain, len(doc))


def values(obj: Obj, key: str) -> list:
    return [v for k, v in obj if k == key]


def walk(v, depth: int, kinds: set) -> None:
    """Depth over the limit and lone surrogates, anywhere."""
    if isinstance(v, (Obj, list)):
        if depth + 1 > MAX_DEPTH:
            kinds.add("depth")
        for item in v:
            if isinstance(v, Obj):
                walk(item[0], depth + 1, kinds)
                walk(item[1], depth + 1, kinds)
            else:
                walk(item, depth + 1, kinds)
    elif isinstance(v, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in v):
        kinds.add("escape")


def check_fields(obj: Obj, spec: dict, kinds: set) -> None:
    for key, kind in spec.items():
        found = values(obj, key)
        if len(found) > 1:
            kinds.add("duplicate")
        for v in found:
            if v is None or kind == "any":
                continue
            if kind in ("str", "msg"):
                if not isinstance(v, str):
                    kinds.add("type")
                elif kind == "str" and len(v.encode("utf-8", "surrogatepass")) > MAX_STR:
                    kinds.add("string")
            elif not isinstance(v, int) or isinstance(v, bool):
                kinds.add("type")


def hexed(s):
    return None if s is None else s.encode().hex()


def expected_fields(top: dict, size: int) -> dict:
    ex = top.get("execution")
    ex = ex if isinstance(ex, dict) else {}
    state = top.get("executionState") or {}
    message = top.get("message")
    if message is not None:
        message = message.encode()[:MAX_STR].decode("utf-8", "ignore")
    return {
        "scalars": [
            hexed(top.get("clientToken")),
            hexed(top.get("code")),
            hexed(message),
            isinstance(top.get("execution"), dict),
            hexed(ex.get("jobId")),
            hexed(ex.get("status")),
            ex.get("versionNumber"),
            ex.get("executionNumber"),
            hexed(state.get("status")),
            state.get("versionNumber"),
        ],
        "document": ex.get("jobDocument"),
        "status_details": ex.get("statusDetails"),
        "size": size,
    }


def canonical(v) -> str:
    return json.dumps(v, sort_keys=True)


# -- the test --------------------------------------------------------------------------------


def chunking(rng: random.Random, size: int) -> list[int]:
    how = rng.random()
    if size == 0:
        return []
    if how < 0.1 and size <= 400:
        return [1] * size
    tops = [top for top in (3, 17, 64, 512) if size // top < 300] + [8192]
    top = rng.choice(tops) if how < 0.9 else size
    sizes, left = [], size
    while left:
        sizes.append(min(rng.randint(1, top), left, 8192))
        left -= sizes[-1]
    return sizes


def generate():
    rng = random.Random(SEED)
    cases, counts = [], {"valid": 0, "rule": 0, "reject": 0}
    while counts["valid"] < VALID_WANTED or counts["rule"] < VALID_WANTED // 4:
        doc = message(rng)
        if rng.random() < 0.25:
            doc = plant(rng, doc)
        data = dump(rng, doc).encode("utf-8")
        if rng.random() < 0.005:  # a few big ones (up to ~40 KiB), streamed through 8 KiB chunks
            item = dump(rng, value(rng, 3, 5)).encode("utf-8")
            many = b",".join([item] * max(1, rng.randint(8000, 40000) // (len(item) + 1)))
            data = b'{"execution":{"jobId":"big","jobDocument":[' + many + b'],"versionNumber":7}}'
        verdict = analyse(data)
        counts["valid" if verdict[0] == "ok" else "rule" if verdict[0] == "err" else "reject"] += 1
        cases.append((data, verdict))
    valid_docs = [data for data, verdict in cases if verdict[0] == "ok"]
    while counts["reject"] < REJECTED_WANTED:
        data = mutate(rng, rng.choice(valid_docs))
        verdict = analyse(data)
        counts["valid" if verdict[0] == "ok" else "rule" if verdict[0] == "err" else "reject"] += 1
        cases.append((data, verdict))
    return [(data, verdict, chunking(rng, len(data))) for data, verdict in cases], counts


def check(index, data, verdict, whole, streamed) -> str | None:
    """None when MicroPython's answers agree with the oracle, else what is wrong."""
    outcome, detail = verdict
    if whole[0] == "crash" or streamed[0] == "crash":
        return f"crash: {whole} / {streamed}"
    if outcome != "ok":
        if whole[0] != "err":
            return f"accepted a document the oracle refuses ({outcome} {detail})"
        kind, offset = whole[1], whole[2]
        if detail is not None and kind not in detail:
            return f"ScanError {kind} where the oracle expects one of {sorted(detail)}"
        if not 0 <= offset <= len(data):
            return f"offset {offset} outside the document"
        if streamed != whole:
            return f"streamed {streamed} differs from whole {whole}"
        return None
    if whole[0] != "ok":
        return f"refused a valid document: {whole}"
    scalars, doc_span, details_span, size, truncated = whole[1:11], whole[11], whole[12], whole[13], whole[14]
    if scalars != detail["scalars"]:
        return f"fields {scalars} != expected {detail['scalars']}"
    if size != detail["size"] or truncated:
        return f"size/truncated {size} {truncated}"
    for span, want, name in (
        (doc_span, detail["document"], "jobDocument"),
        (details_span, detail["status_details"], "statusDetails"),
    ):
        if want is None:
            if span is not None:
                return f"{name} span {span} where there is none"
            continue
        if span is None:
            return f"no {name} span"
        got = json.loads(data[span[0] : span[1]].decode())
        if canonical(got) != canonical(want):
            return f"{name} span decodes to {got!r}, expected {want!r}"
    if streamed[0] != "ok" or streamed[1:11] != scalars or streamed[11:15] != [None, None, size, True]:
        return f"streamed {streamed} differs from whole {whole}"
    return None


def test_scanner_agrees_with_cpython_json():
    cases, counts = generate()
    with tempfile.TemporaryDirectory(prefix="scanprop-") as folder:
        path = Path(folder) / "cases.bin"
        with path.open("wb") as out:
            for data, _verdict, sizes in cases:
                out.write((" ".join(str(n) for n in [len(data), *sizes]) + "\n").encode())
                out.write(data)
        proc = subprocess.run(
            [micropython(), "-X", "heapsize=64M", str(DRIVER), str(path)],
            env=dict(os.environ, MICROPYPATH=str(ROOT / "lib")),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == len(cases), proc.stdout[-2000:]
    failures = []
    for (data, verdict, _sizes), (index, whole, streamed) in zip(cases, results, strict=True):
        problem = check(index, data, verdict, whole, streamed)
        if problem:
            failures.append(f"#{index} {data[:300]!r}: {problem}")
    kinds = {}
    for (_data, verdict, _sizes), (_i, whole, _s) in zip(cases, results, strict=True):
        if verdict[0] != "ok" and whole[0] == "err":
            key = ("cpython-rejects " if verdict[0] == "reject" else "rule ") + whole[1]
            kinds[key] = kinds.get(key, 0) + 1
    print("documents:", counts, "total bytes:", sum(len(c[0]) for c in cases))
    print("scanner errors:", dict(sorted(kinds.items())))
    assert not failures, f"{len(failures)} disagreements, first ones:\n" + "\n".join(failures[:15])
    assert counts["valid"] >= VALID_WANTED and counts["reject"] >= REJECTED_WANTED, counts
