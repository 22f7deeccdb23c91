# main.py: the device entry point, on the ESP32 and on the simulated unix board. MIT licence.
"""Load and validate config.json, bring up the board, pick the application folder, then run
the Jobs engine for ever. The engine recovers the journal, connects, and never lets one job's
crash end the loop; the watchdog is fed from that loop.
"""

import sys

from micropython import const

_WATCHDOG_MS = const(120000)  # longer than the longest blocking step (TLS connect, a stalled download)
_NETWORK_MS = const(30000)
_EXIT_CONFIG = const(78)


def _halt(message):
    print("main:", message)
    if sys.platform == "linux":
        # the simulated board: stop instead of booting again into the same error
        sys.exit(_EXIT_CONFIG)
    # on a chip: end main.py, so a person at the REPL can fix config.json


def _origin(module):
    # /lib/... when deployed, .frozen/... when frozen into the firmware: worth a line at boot
    return getattr(module, "__file__", "frozen")


def main():
    from jobs import config

    try:
        cfg = config.load("config.json")
    except (config.ConfigError, OSError) as error:
        _halt("config.json: " + str(error))
        return
    import board

    hw = board.Board(cfg)
    print("main: board", hw.name, "reset reason:", hw.reset_reason())
    print("main: modules", _origin(board), _origin(config))

    from jobs.ops import appstore

    # the application folder ota.files manages comes first, so its modules win
    sys.path.insert(0, appstore.boot(hw.root))
    if not cfg["app_version"]:
        cfg["app_version"] = appstore.version(hw.root)
    try:
        # the user's custom operations register themselves; the file is optional
        import handlers  # noqa: F401  # pyright: ignore[reportMissingImports]
    except ImportError as error:
        if "handlers" not in str(error):
            print("main: handlers.py:", repr(error))
    except Exception as error:  # a broken handlers.py must not stop the device taking jobs
        print("main: handlers.py:", repr(error))

    from jobs import engine

    hw.connect_network(_NETWORK_MS)
    try:
        device = engine.build(cfg, hw)
    except OSError as error:  # a certificate or key file missing: booting again would not help
        _halt(str(error))
        return
    device.wdt = hw.watchdog(cfg["watchdog_ms"] or _WATCHDOG_MS)
    device.run_forever()


main()
