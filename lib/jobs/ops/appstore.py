# jobs.ops.appstore: the application files' two folders and the pointer that picks one. MIT licence.
"""Where ota.files keeps the application: <root>/app/a and <root>/app/b, and <root>/app/app.json
{"dir", "version", "state", "previous", "previousVersion"} naming the one that runs.

Switching is one atomic rename of app.json; the other folder keeps the previous version. The
states mirror ESP-IDF's OTA: switch() -> NEW; boot() at the next start -> TRYING; commit() ->
VALID; a boot() that finds TRYING (reset before commit) switches back to the previous folder.
The firmware calls `sys.path.insert(0, appstore.boot(root))` before importing the application.
"""

import os

from jobs import store

_POINTER = "app/app.json"


def _app(root):
    return store.join(root, "app")


def state(root):
    return store.load(store.join(root, _POINTER)) or {"dir": "a", "version": "none", "state": "VALID"}


def _save(root, data):
    store.save(store.join(root, _POINTER), data)


def version(root):
    """The running application's version ("none" before the first ota.files)."""
    return state(root)["version"]


def folder(root, name=None):
    return _app(root) + "/" + (name or state(root)["dir"])


def other(current):
    return "b" if current["dir"] == "a" else "a"


def boot(root):
    """Run once per boot: advance NEW -> TRYING or roll TRYING back; the folder to import from."""
    s = state(root)
    if s["state"] == "NEW":
        s["state"] = "TRYING"
        _save(root, s)
    elif s["state"] == "TRYING" and s.get("previous"):
        s = {"dir": s["previous"], "version": s["previousVersion"], "state": "VALID", "rolledBack": s["dir"]}
        _save(root, s)
    for path in (_app(root), folder(root, s["dir"])):
        try:
            os.mkdir(path)
        except OSError:
            pass
    return folder(root, s["dir"])


def switch(root, name, version):
    """Make folder `name` (fully staged and verified) the application from the next boot."""
    s = state(root)
    new = {"dir": name, "version": version, "state": "NEW"}
    new["previous"] = s["dir"]
    new["previousVersion"] = s["version"]
    _save(root, new)


def commit(root):
    s = state(root)
    s["state"] = "VALID"
    s.pop("previous", None)
    s.pop("previousVersion", None)
    _save(root, s)
