# jobs.store: small JSON files written atomically. MIT licence.
"""Small JSON files that survive a reset: written to `<path>.tmp`, then renamed over `path`.

On LittleFS (ESP32) and POSIX a rename replaces the target atomically, so a reader sees the
old file or the new one, never half of one.
"""

import json
import os


def load(path, default=None):
    """The decoded JSON in `path`, or `default` when it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def save(path, value):
    """Write `value` as JSON to `path` atomically."""
    tmp = path + ".tmp"
    data = json.dumps(value)  # one write: json.dump would issue a write per token
    with open(tmp, "w") as f:
        f.write(data)
    os.rename(tmp, path)


def join(root, rel):
    """`rel` under the folder `root` ("/" on the ESP32): the one way a path meets the device
    root. An absolute `rel` (a config path such as "/certs/ca.der") is returned as it is."""
    if rel.startswith("/") or not root:
        return rel
    return root.rstrip("/") + "/" + rel


def makedirs(path):
    """Create the folder `path` and every missing folder above it."""
    built = ""
    for part in path.split("/"):
        built = built + part + "/" if built or part else "/"
        if part:
            try:
                os.mkdir(built)
            except OSError:
                pass


def rmtree(path):
    """Delete the folder `path` and everything in it (nothing when it is missing)."""
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return
    for entry in entries:
        child = path + "/" + entry[0]
        if entry[1] == 0x4000:
            rmtree(child)
        else:
            os.remove(child)
    os.rmdir(path)


def remove(path):
    """Delete `path` if it exists."""
    try:
        os.remove(path)
    except OSError:
        pass


class Journal:
    """The execution being worked on and its phase (see docs/contracts.md).

    Phases: "claimed", "running" (or an op's own phase), "done". `clear()` removes it.
    """

    def __init__(self, path):
        self.path = path

    def read(self):
        entry = load(self.path)
        if isinstance(entry, dict) and entry.get("job_id") and entry.get("phase"):
            return entry
        return None

    def write(self, entry):
        save(self.path, entry)

    def clear(self):
        remove(self.path)
