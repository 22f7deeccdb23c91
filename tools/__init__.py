"""Host-side tools (CPython 3.11+): local AWS IoT stand-in, provisioning, deploy, flash, bench."""


def stopped_by(error: OSError | RuntimeError, where: object) -> str:
    """The one line a tool prints when it cannot go on: a folder it cannot make (OSError, named by
    its path, else `where`), or a service that would not start (RuntimeError: its first line)."""
    if isinstance(error, OSError):
        return f"{error.filename or where}: {error.strerror or error}"
    return (str(error).strip() or repr(error)).splitlines()[0]
