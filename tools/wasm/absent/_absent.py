# _absent: what every stand-in here raises. MIT licence.
_EOPNOTSUPP = 95


def absent(what):
    """A function that raises OSError(EOPNOTSUPP) naming `what` the wasm32 runtime lacks."""

    def call(*args, **kwargs):
        raise OSError(_EOPNOTSUPP, "no " + what + " on the wasm32 runtime")

    return call
