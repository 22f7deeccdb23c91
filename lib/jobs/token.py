# jobs.token: clientToken standard "<bootId>-<n>". MIT licence.
"""Client tokens for Jobs requests, and the bounded set of tokens still awaiting an answer.

    tokens = Tokens()              # bootId: 8 random hex digits drawn now
    tok = tokens.new()             # "1a2b3c4d-1", registered as outstanding
    tokens.take(tok)               # True once; a token not outstanding counts tokens.ignored

At most `capacity` tokens are outstanding: a new one pushes out the oldest (counted in
`tokens.dropped`), so memory does not grow with run time or with lost answers.
"""

import os

from micropython import const

_COUNTER_WRAP = const(999_999_999)  # keeps n a small int and the token <= 18 chars


def new_boot_id():
    """8 random lowercase hex digits (hardware RNG on ESP32, getrandom on Unix)."""
    try:
        raw = os.urandom(4)
    except (AttributeError, OSError):  # a port built without os.urandom
        import random

        raw = random.getrandbits(32).to_bytes(4, "big")
    return "%08x" % int.from_bytes(raw, "big")


def _valid_boot_id(boot_id):
    if not isinstance(boot_id, str) or not 0 < len(boot_id) <= 16:
        return False
    for c in boot_id:
        if not ("0" <= c <= "9" or "a" <= c <= "z" or "A" <= c <= "Z"):
            return False
    return True


class Tokens:
    """Issues `<bootId>-<n>` tokens and recognises answers to them."""

    def __init__(self, boot_id=None, capacity=8):
        if boot_id is None:
            boot_id = new_boot_id()
        if not _valid_boot_id(boot_id):
            raise ValueError("boot id must be 1-16 letters or digits: %r" % (boot_id,))
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.boot_id = boot_id
        self._prefix = boot_id + "-"
        self._slots: list = [None] * capacity
        self._n = 0
        self.ignored = 0  # answers whose token was not outstanding
        self.dropped = 0  # outstanding tokens pushed out by newer ones

    def new(self):
        """A fresh token, registered as outstanding."""
        n = self._n + 1 if self._n < _COUNTER_WRAP else 1
        self._n = n
        token = self._prefix + str(n)
        slots = self._slots
        i = n % len(slots)
        if slots[i] is not None:
            self.dropped += 1
        slots[i] = token
        return token

    def take(self, token):
        """True (once) when `token` is outstanding; else count it in `ignored`, False."""
        if token is not None and self.forget(token):
            return True
        self.ignored += 1
        return False

    def forget(self, token):
        """Stop waiting for `token` (a request given up on); True if it was outstanding."""
        slots = self._slots
        for i in range(len(slots)):
            if slots[i] == token:
                slots[i] = None
                return True
        return False

    def outstanding(self):
        """How many tokens await an answer."""
        return len(self._slots) - self._slots.count(None)
