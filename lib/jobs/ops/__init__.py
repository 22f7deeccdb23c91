# jobs.ops: operation registry, parameter schemas, AWS document forms. MIT licence.
"""Operations a job document may name, and the checks run before any of them moves anything.

    from jobs import ops
    op, doc, reason = ops.prepare(doc, board)   # converted once; reason -> REJECTED, never run
    details = op.run(job)                       # dict -> SUCCEEDED; ops.Failed(reason) -> FAILED

Built-in operations live in sibling modules imported on first use (`find`), so a device pays
in RAM only for the handlers its jobs name. A user handler is an `Op` subclass registered with
`ops.register(MyOp())` (see jobs/ops/custom_example.py and docs/operations.md).
"""

import sys

# parameter kinds
PIN = "pin"  # board alias (str) or GPIO number (int); checked against the board's allowlist
INT = "int"  # lo/hi bound the value
STR = "str"  # lo/hi bound the length
BOOL = "bool"
URL = "url"  # https:// only; hi bounds the length
SHA256 = "sha256"  # 64 hex digits
LIST = "list"  # lo/hi bound the count
DICT = "dict"  # lo/hi bound the number of keys
ANY = "any"

_MAX_URL = 2048
_MAX_STR = 1024


class Failed(Exception):
    """The handler failed; args[0] is the reason for statusDetails.reason."""


class Canceled(Exception):
    """The handler stopped because job.progress() returned False."""


class Param:
    """One top-level key of a job document: its kind, bounds, and whether it may be absent."""

    def __init__(self, name, kind, lo=None, hi=None, optional=False):
        self.name = name
        self.kind = kind
        self.lo = lo
        self.hi = hi
        self.optional = optional

    def check(self, value, board):
        """None when `value` fits, else the problem (str)."""
        kind = self.kind
        if kind == PIN:
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                return "alias or GPIO number expected"
            try:
                board.resolve(value)
            except ValueError as error:
                reason = str(error.args[0]) if error.args else "not allowed"
                return reason[5:] if reason.startswith("pin: ") else reason
            return None
        if kind == INT:
            if isinstance(value, bool) or not isinstance(value, int):
                return "integer expected"
            return _bounds(value, self.lo, self.hi, "")
        if kind == BOOL:
            return None if isinstance(value, bool) else "true or false expected"
        if kind in (STR, URL, SHA256):
            if not isinstance(value, str):
                return "string expected"
            if kind == SHA256:
                return None if _is_sha256(value) else "64 hex digits expected"
            if kind == URL:
                if not value.startswith("https://") or len(value) <= 8:
                    return "https:// URL expected"
                from jobs.ops import https  # only documents that download load it

                try:
                    https.parse_url(value)
                except ValueError as error:
                    return str(error.args[0])
                return _bounds(len(value), None, self.hi or _MAX_URL, " characters")
            return _bounds(len(value), self.lo, self.hi or _MAX_STR, " characters")
        if kind == LIST:
            if not isinstance(value, list):
                return "list expected"
            return _bounds(len(value), self.lo, self.hi, " items")
        if kind == DICT:
            if not isinstance(value, dict):
                return "object expected"
            return _bounds(len(value), self.lo, self.hi, " keys")
        return None


def _bounds(n, lo, hi, unit):
    if lo is not None and n < lo:
        return "at least " + str(lo) + unit
    if hi is not None and n > hi:
        return "at most " + str(hi) + unit
    return None


def _is_sha256(s):
    if len(s) != 64:
        return False
    for c in s:
        if c not in "0123456789abcdefABCDEF":
            return False
    return True


class Op:
    """Base of every operation. Subclasses set `name`, `params` and define `run(job)`.

    `check(doc, board)` may add checks beyond the parameter schema (return a reason or None).
    `resume(job)`, when defined, is called after a reset in one of the op's journal phases.
    `idempotent`: running it twice has the effect of running it once (the engine need not
    journal it: after a reset it simply runs again).
    """

    name = ""
    params = ()
    idempotent = False  # True: running it twice has the effect of running it once (not journaled)

    def check(self, doc, board):
        return None

    def run(self, job):
        raise Failed("not implemented")


_registry = {}
# built-in operation -> module under jobs.ops, imported on first use; each module lists its
# operations in OPS (they are not registered on import, so a user's op cannot race them)
_BUILTIN = {
    "gpio.write": "gpio",
    "gpio.pulse": "gpio",
    "gpio.read": "gpio",
    "system.reboot": "system",
    "config.set": "system",
    "diag.echo": "system",
    "ota.firmware": "firmware",
    "ota.files": "files",
    "file.download": "download",
    "afr_ota": "afr",
}


def register(op, override=False):
    """Make `op` (an Op instance) answer documents whose "operation" is op.name; returns op.

    A built-in operation's name is refused (ValueError) unless `override` is True: replacing
    gpio.write replaces its pin checks too, so it must be meant."""
    name = op.name
    if not name or not isinstance(name, str):
        raise ValueError("an operation needs a name")
    if name in _BUILTIN and not override:
        raise ValueError(
            "operation " + name + " is built in; register(op, override=True) replaces it on purpose"
        )
    _registry[name] = op
    return op


def find(name):
    """The Op registered under `name`, importing its built-in module if needed; else None."""
    op = _registry.get(name)
    if op is None and name in _BUILTIN:
        path = "jobs.ops." + _BUILTIN[name]
        __import__(path)
        for builtin in sys.modules[path].OPS:
            if builtin.name not in _registry:  # an override registered first stays
                _registry[builtin.name] = builtin
        op = _registry.get(name)
    return op


# what most jobs run, small, and the board's pin table: kept loaded
_RESIDENT = ("jobs.ops.gpio", "jobs.ops.system", "jobs.ops.pins")
_ONLY_FOR_OPS = ("jobs.ecdsa", "jobs.afrdoc")  # library modules only operations import


def unload():
    """Drop the operations' code but the resident few (an OTA's, a download's and what only
    they import) once their job is over, so it does not stay on the heap; `find` imports it
    again when a job names it."""
    import jobs

    for path in list(sys.modules):
        if path in _ONLY_FOR_OPS or (path.startswith("jobs.ops.") and path not in _RESIDENT):
            for builtin in getattr(sys.modules[path], "OPS", ()):
                if _registry.get(builtin.name) is builtin:
                    del _registry[builtin.name]
            jobs.unload(path)


def check_fields(params, obj, board, where="", extra=None):
    """None when the dict `obj` fits `params` (each present unless optional, of its kind and
    within bounds, no key but theirs and `extra`), else the reason; `where` prefixes the names
    in it ("files[0]")."""
    present = 1 if extra is not None and extra in obj else 0
    for param in params:
        key = param.name
        if key not in obj:
            if param.optional:
                continue
            return (where + "." + key if where else key) + ": required"
        present += 1
        problem = param.check(obj[key], board)
        if problem:
            return (where + "." + key if where else key) + ": " + problem
    if len(obj) > present:
        for key in obj:
            if key != extra and not _declared(params, key):
                return (where + ": " if where else "") + "unknown parameter " + str(key)[:64]
    return None


def _declared(params, key):
    for param in params:
        if param.name == key:
            return True
    return False


def prepare(doc, board):
    """(op, doc, None) when `doc` may run, else (None, doc, reason) for REJECTED.

    The one conversion of a job document: the AWS Device Client forms mapped onto ours, then
    the operation's parameter schema and its own checks (pins, paths, config keys) against
    `board`. The returned doc is the converted one, also with a reason."""
    if not isinstance(doc, dict):
        return None, doc, "document is not a JSON object"
    doc, reason = _convert(doc)
    if reason:
        return None, doc, reason
    name = doc.get("operation")
    if name is None or name == "":
        return None, doc, "operation missing"
    if not isinstance(name, str):
        return None, doc, "operation: string expected"
    op = find(name)
    if op is None:
        return None, doc, "unsupported operation " + name[:64]
    reason = check_fields(op.params, doc, board, "", "operation") or op.check(doc, board)
    if reason:
        return None, doc, reason
    return op, doc, None


def _convert(doc):
    """(doc in our form, None) or (doc, "unsupported handler <name>")."""
    if not isinstance(doc, dict):
        return doc, None
    if "steps" in doc and "operation" not in doc:
        # {"version": "1.0", "steps": [{"action": {"type": "runHandler", "input": {...}}}]}
        steps = doc.get("steps")
        if not isinstance(steps, list) or len(steps) != 1 or "finalStep" in doc:
            return doc, "unsupported steps: exactly one step is supported"
        action = steps[0].get("action") if isinstance(steps[0], dict) else None
        if not isinstance(action, dict):
            return doc, "unsupported steps: step without an action"
        kind = action.get("type")
        inputs = action.get("input")
        if kind != "runHandler" or not isinstance(inputs, dict):
            return doc, "unsupported handler " + str(kind)[:64]
        return _handler(inputs.get("handler"), inputs.get("args"))
    name = doc.get("operation")
    if isinstance(name, str) and ("args" in doc or name.endswith(".sh")):
        # the Device Client's old form: {"operation": "reboot.sh", "args": [...]}
        return _handler(name, doc.get("args"))
    return doc, None


def _handler(name, args):
    name = str(name)[:64]
    if args is None:
        args = []
    if not isinstance(args, list):
        return {"operation": name}, "args: list expected"
    if name == "reboot.sh":
        return {"operation": "system.reboot"}, None
    if name == "download-file.sh":
        # args [downloadUrl, filePath] (+ our optional third: the file's sha256)
        if len(args) < 2:
            return {"operation": "file.download"}, "args: [downloadUrl, filePath] expected"
        out = {"operation": "file.download", "url": args[0], "path": args[1]}
        if len(args) > 2:
            out["sha256"] = args[2]
        return out, None
    return {"operation": name}, "unsupported handler " + name
