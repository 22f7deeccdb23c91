# opsfallback: the operations contract (docs/contracts.md) for engine tests. MIT licence.
"""`jobs.ops` for engine tests, until the ops branch (lib/jobs/ops) is merged.

`load()` returns the real `jobs.ops` when it exists; otherwise it installs this minimal
implementation of the contract's registry (register/find/normalize/validate, Op, Param,
Failed, Canceled) as `jobs.ops`. Tests register their own tiny operations either way.
"""

import sys

INT = "int"
STR = "str"
ANY = "any"


class Failed(Exception):
    pass


class Canceled(Exception):
    pass


class Param:
    def __init__(self, name, kind, lo=None, hi=None, optional=False):
        self.name = name
        self.kind = kind
        self.lo = lo
        self.hi = hi
        self.optional = optional


class Op:
    name = ""
    params = ()

    def run(self, job):
        raise Failed("not implemented")


_registry = {}


def register(op):
    _registry[op.name] = op
    return op


def find(name):
    return _registry.get(name)


def normalize(doc):
    return doc


def validate(doc, board=None):
    if not isinstance(doc, dict):
        return None, "document is not a JSON object"
    name = doc.get("operation")
    op = find(name) if isinstance(name, str) else None
    if op is None:
        return None, "unsupported operation " + str(name)[:64]
    for p in op.params:
        if p.name not in doc:
            if p.optional:
                continue
            return None, p.name + ": required"
        v = doc[p.name]
        if p.kind == INT and (not isinstance(v, int) or (p.hi is not None and v > p.hi)):
            return None, p.name + ": integer " + str(p.lo) + ".." + str(p.hi) + " expected"
    return op, None


def load():
    try:
        from jobs import ops

        return ops
    except ImportError:
        import jobs

        me = sys.modules[__name__]
        sys.modules["jobs.ops"] = me
        jobs.ops = me
        return me
