# main.py: the device entry point, on the ESP32 and on the simulated unix board. MIT licence.
"""Boot, then run the Jobs engine for ever. main.py runs once: if it ends, an ESP32 sits at its
REPL for good with nothing watching it, so nothing a retry or a reset can cure ends it
(docs/operations.md, "Boot"):

* config.json bad, or a certificate missing: a reset cannot cure that, so the board halts with
  the message (at the REPL, to fix it), after rolling back a pending OTA image;
* the watchdog (watchdog_ms) is armed before anything that can hang;
* Wi-Fi, time sync and the engine's TLS setup are retried with backoff for boot_timeout_ms,
  then the board resets; so does any unexpected exception once config.json has loaded, but an
  ImportError (a module missing or broken) halts;
* development mode (a `devmode` file in the device root, or the BOOT button held as main.py
  starts): no watchdog, and what would reset the board halts instead.
"""

import gc
import os
import sys
import time

from micropython import const

_NETWORK_MS = const(30000)  # one Wi-Fi attempt (the wait feeds the watchdog)
_RETRY_MIN_MS = const(1000)
_RETRY_MAX_MS = const(30000)
_RESET_PAUSE_MS = const(3000)  # before a reset: time for a Ctrl-C into the REPL, no tight boot loop
_INTERRUPTED_WDT_MS = const(3600000)  # after Ctrl-C: an hour at the REPL before the watchdog resets
_CERTS = ("ca", "cert", "key")


class _Halted(Exception):
    """The board halted (a chip is at its REPL now): main.py ends."""


def _reason(error):
    text = str(error)
    name = error.__class__.__name__
    return name + ": " + text if text else name


def _on_root(root, path):
    from jobs import store

    return store.join(root, path)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _origin(module):
    # /lib/... when deployed, .frozen/... when frozen into the firmware: worth a line at boot
    return getattr(module, "__file__", "frozen")


def _import_handlers():
    """The user's custom operations register themselves; the file is optional, and a broken one
    must not stop the device taking the built-in jobs."""
    try:
        import handlers  # noqa: F401  # pyright: ignore[reportMissingImports]
    except Exception as error:  # the traceback names the line (of a SyntaxError too)
        if isinstance(error, ImportError) and error.args and error.args[0] == "no module named 'handlers'":
            return
        print("main: handlers.py: " + _reason(error) + "; its operations are not registered")
        sys.print_exception(error)


class _Boot:
    """The board, the config, the watchdog and the development mode of this boot."""

    def __init__(self, hw, cfg):
        self.hw = hw
        self.cfg = cfg
        self.dev = ""  # why this boot is in development mode
        self.wdt = None

    def feed(self):
        if self.wdt is not None:
            self.wdt.feed()

    def sleep(self, ms):
        from jobs import clock

        clock.sleep(ms, self.feed)

    def run(self, problem):
        """The boot; `problem` is why config.json did not load (None when it did)."""
        import board
        import jobs
        from jobs import config
        from jobs.ops import appstore

        hw = self.hw
        print("main: board", hw.name, "reset reason:", hw.reset_reason())
        print("main: modules", _origin(board), _origin(config))
        # the application folder ota.files manages comes first, so its modules win; this also
        # moves a newly switched application to TRYING (a reset before its commit rolls it back)
        sys.path.insert(0, appstore.boot(hw.root))
        if _exists(_on_root(hw.root, "devmode")):
            self.dev = "a devmode file"
        elif hw.boot_held():
            self.dev = "BOOT held"
        if self.dev:
            print("main: development mode (" + self.dev + "): no watchdog; a failure halts instead of resetting")
        if problem:
            self.halt(problem)
        cfg = self.cfg
        for key in _CERTS:
            path = _on_root(hw.root, cfg[key])
            if not _exists(path):
                self.halt("cannot read " + path + " (" + key + " in config.json)")
        if not cfg["app_version"]:
            cfg["app_version"] = appstore.version(hw.root)
        jobs.unload("jobs.ops.appstore")  # the rest of the boot and the jobs do not need it
        if cfg["watchdog_ms"] and not self.dev:
            self.wdt = hw.watchdog(cfg["watchdog_ms"])
            print("main: watchdog armed,", cfg["watchdog_ms"], "ms")
        _import_handlers()
        deadline = time.ticks_add(time.ticks_ms(), cfg["boot_timeout_ms"])
        self.retry("network", lambda: hw.connect_network(_NETWORK_MS, self.feed), OSError, deadline)
        from jobs import engine

        # ValueError: mbedTLS reports a key it could not allocate memory for as "invalid key"
        device = self.retry("TLS setup", lambda: engine.build(cfg, hw), (OSError, ValueError, MemoryError), deadline)
        device.wdt = self.wdt
        device.run_forever()

    def retry(self, what, attempt, errors, deadline):
        """attempt() until it returns, with backoff; past `deadline`, reset (or halt)."""
        from jobs import clock

        tries = 0
        while True:
            self.feed()
            try:
                return attempt()
            except errors as error:
                gc.collect()
                wait = clock.backoff_ms(tries, _RETRY_MIN_MS, _RETRY_MAX_MS)
                if time.ticks_diff(deadline, time.ticks_ms()) <= wait:
                    print("main:", what + ":", _reason(error), "- still failing after", self.cfg["boot_timeout_ms"], "ms")
                    self.give_up("boot: " + what + " failed")
                print("main:", what + ":", _reason(error), "- retry in", wait, "ms")
                self.sleep(wait)
                tries += 1

    def give_up(self, reason):
        """What a retry cannot cure a reset may: reset (halt in development mode)."""
        if self.dev:
            self.halt(reason + " (development mode: no reset)")
        print("main: resetting in", _RESET_PAUSE_MS // 1000, "s (Ctrl-C for the REPL):", reason)
        self.sleep(_RESET_PAUSE_MS)
        self.hw.reset(reason)

    def halt(self, message):
        """Stop at the REPL with `message`, once no OTA image is left pending."""
        hw = self.hw
        print("main:", message)
        pending = self.pending()
        if pending and not hw.reset_reason().startswith("rollback"):
            # a reset before mark-valid/commit boots the previous image (the bootloader's
            # ABORTED on ESP-IDF, appstore.boot() for the application); it then halts or runs
            print("main: rolling back the pending", pending, "first")
            hw.reset("rollback: " + pending)
        print("main: halted; fix it at the REPL (e.g. mpremote), then reset the board")
        hw.halt(message)
        raise _Halted()

    def pending(self):
        """The OTA images this boot runs that are not yet marked valid ("" when none)."""
        from jobs.ops import appstore

        hw = self.hw
        names = []
        if hw.boot_state() == "PENDING_VERIFY":
            names.append("firmware " + hw.firmware_version())
        app = appstore.state(hw.root)
        if app["state"] == "TRYING" and app.get("previous"):
            names.append("application " + app["version"])
        return " and ".join(names)

    def interrupted(self):
        """Ctrl-C (mpremote, a person): the REPL is theirs, but an armed watchdog cannot be
        stopped; give them an hour."""
        if self.wdt is not None:
            try:
                self.wdt = self.hw.watchdog(_INTERRUPTED_WDT_MS)
            except Exception:  # noqa: BLE001 - a port that cannot re-arm keeps the old timeout
                pass
            print("main: interrupted; the watchdog still runs and resets the board within an hour")
            print("main: for a session at the REPL, create the file devmode in the device root and reset")

    def unexpected(self, error):
        print("main: unexpected", _reason(error))
        sys.print_exception(error)
        if self.cfg is None or isinstance(error, ImportError):
            self.halt("stopped by the error above (a reset would not cure it)")
        self.give_up("main: " + error.__class__.__name__)


def main():
    from jobs import config

    try:
        cfg, problem = config.load("config.json"), None
    except config.ConfigError as error:
        cfg, problem = None, str(error)
    import board

    boot = _Boot(board.Board(cfg or {}), cfg)
    try:
        boot.run(problem)
    except _Halted:
        pass
    except KeyboardInterrupt:
        boot.interrupted()
    except Exception as error:  # after config.json loaded, a reset may cure what a bug did
        try:
            boot.unexpected(error)
        except _Halted:
            pass


main()
