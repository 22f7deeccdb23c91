# mptest: the few helpers device tests need, for MicroPython. MIT licence.
"""Helpers for tests that run inside MicroPython (see tests/mprunner.py)."""

import os


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


def env(name):
    """A setting the pytest plugin passes in (e.g. the broker's port); skip when absent."""
    value = os.getenv(name)
    if value is None:
        skip(name + " is not set: run this file through pytest")
    return value


def read(path):
    with open(path, "rb") as f:
        return f.read()
