# mptest: the few helpers device tests need, for MicroPython. MIT licence.
"""Helpers for tests that run inside MicroPython (see tests/mprunner.py)."""

import os
import sys


class Skip(Exception):
    """Raise to skip the current test with a reason."""


def skip(reason):
    raise Skip(reason)


class raises:
    """`with raises(ValueError) as caught: ...`; `caught.value` is the exception."""

    def __init__(self, *kinds):
        self.kinds = kinds
        self.value = None

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is None:
            raise AssertionError("did not raise " + " or ".join(k.__name__ for k in self.kinds))
        if not issubclass(kind, self.kinds):
            return False
        self.value = value
        return True


def live_heap():
    """Skip when the live heap cannot be measured here: on the wasm32 runtime gc.collect()
    frees nothing until control returns to JavaScript, so gc.mem_alloc() inside a test counts
    everything allocated since it began (allocation counts stay exact there)."""
    if sys.platform == "webassembly":
        skip("no live heap inside a test (gc.collect() is deferred); `make bench` measures it")


def env(name):
    """A setting the pytest plugin passes in (e.g. the broker's port); skip when absent."""
    value = os.getenv(name)
    if value is None:
        skip(name + " is not set: run this file through pytest")
    return value


def read(path):
    with open(path, "rb") as f:
        return f.read()
