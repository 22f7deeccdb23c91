# board (unix): the simulated ESP32 used on the host. MIT licence.
"""A simulated ESP32-DevKitC: pins, reset, halt, OTA partitions and boot selection, kept in files.

State directory: config["board_state_dir"], else $JOBS_BOARD_STATE, else ./state; it is the
device root. Test knobs (flat keys, as config.json is flat): board_ota (False: no OTA
partitions), board_ota_slot_size, board_firmware_version (of the first image, default 1.0.0),
board_psram (default False).
Files, under <state>/simboard/:
    pins.json      current level of every simulated pin (a test may set an input's level here;
                   "0": 0 is the BOOT button held)
    pins.log       one line per change: "<alias> <number> <old> <new>"
    ota_0.bin, ota_1.bin, otadata.json   two file-backed OTA slots and the boot selection
    reset.json     reason recorded by reset(), read (and removed) at the next boot
    network.json   a simulated network fault, written by a test: {"wifi": "STAT_NO_AP_FOUND"}
                   (no Wi-Fi, with that status) or {"ntp": true} (the time server is silent)
A reset ends the process with exit status 75; the host runner starts it again ("boot"). A halt
ends it with 78: the runner stops (on a chip the board waits at its REPL).
Boot selection follows ESP-IDF: set_boot() marks a slot NEW; the next boot makes it
PENDING_VERIFY; mark_valid() makes it VALID; a boot that finds PENDING_VERIFY marks it ABORTED and
boots the previous slot.
"""

import os
import sys
import time

from devkitc import BOOT_PIN, TABLE
from jobs import clock, store
from micropython import const

EXIT_RESET = const(75)
EXIT_HALT = const(78)
_BLOCK = const(4096)
_SLOT_SIZE = const(0x180000)  # as ESP32_GENERIC-OTA's partitions-4MiB-ota.csv
_IMAGE_MAGIC = const(0xE9)  # first byte of every ESP32 app image

_booted = None  # (otadata dict, last reset reason, state folder), once per process


class SimPin:
    """machine.Pin's value() over the board's pin state file."""

    def __init__(self, board, number, alias):
        self._board = board
        self.number = number
        self.alias = alias

    def value(self, level=None):
        if level is None:
            return self._board._levels().get(str(self.number), 0)
        self._board._set_level(self, 1 if level else 0)
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class SimPartition:
    """The parts of esp32.Partition the OTA code uses, over a file."""

    def __init__(self, board, label):
        self._board = board
        self.label = label
        self.path = store.join(board._dir, label + ".bin")
        self.size = board._slot_size

    def info(self):
        return (0, 16 + int(self.label[-1]), 0, self.size, self.label, False)

    def ioctl(self, cmd, arg):
        if cmd == 4:
            return self.size // _BLOCK
        if cmd == 5:
            return _BLOCK
        return 0

    def writeblocks(self, block, buf, offset=0):
        pos = block * _BLOCK + offset
        if pos + len(buf) > self.size:
            raise OSError(22)
        try:
            f = open(self.path, "r+b")
        except OSError:
            f = open(self.path, "w+b")
        try:
            f.seek(pos)
            f.write(buf)
        finally:
            f.close()

    def readblocks(self, block, buf, offset=0):
        with open(self.path, "rb") as f:
            f.seek(block * _BLOCK + offset)
            n = f.readinto(buf)
        for i in range(n or 0, len(buf)):
            buf[i] = 0xFF

    def set_boot(self):
        """Select this slot for the next boot (NEW); OSError(-5379) as ESP-IDF for a non-image."""
        first = bytearray(1)
        try:
            self.readblocks(0, first)
        except OSError:
            first[0] = 0
        if first[0] != _IMAGE_MAGIC:
            raise OSError(-5379)  # ESP_ERR_OTA_VALIDATE_FAILED
        self._board._select(self.label)


class SimWatchdog:
    """machine.WDT stand-in: a feed later than the timeout resets the board."""

    def __init__(self, board, timeout_ms):
        self._board = board
        self._timeout = timeout_ms
        self._last = time.ticks_ms()

    def feed(self):
        now = time.ticks_ms()
        if time.ticks_diff(now, self._last) > self._timeout:
            self._board.reset("watchdog")
        self._last = now


class Board:
    """The unix board; see the module docstring."""

    name = "unix"
    table = TABLE
    pins = TABLE.pins

    @classmethod
    def resolve(cls, ref):
        return cls.table.resolve(ref)

    def __init__(self, config=None):
        config = config or {}
        state = config.get("board_state_dir") or os.getenv("JOBS_BOARD_STATE") or "state"
        self.root = state.rstrip("/") or "/"
        self._dir = store.join(self.root, "simboard")  # not "board/": a folder would shadow board.py
        store.makedirs(self._dir)
        self._has_ota = config.get("board_ota", True)
        self._slot_size = config.get("board_ota_slot_size", _SLOT_SIZE)
        self._initial_version = config.get("board_firmware_version", "1.0.0")
        self.psram = config.get("board_psram", False)
        self.config = config
        self._pin_cache = None
        self._boot()

    # --- pins -------------------------------------------------------------------------------
    def pin(self, ref):
        number, direction, safe, alias = self.table.resolve(ref)
        return SimPin(self, number, alias)

    def _levels(self):
        if self._pin_cache is None:
            self._pin_cache = store.load(store.join(self._dir, "pins.json"), {})
        return self._pin_cache

    def _set_level(self, pin, level):
        levels = self._levels()
        key = str(pin.number)
        old = levels.get(key, 0)
        if old == level and key in levels:
            return
        levels[key] = level
        store.save(store.join(self._dir, "pins.json"), levels)
        with open(store.join(self._dir, "pins.log"), "a") as f:
            f.write(pin.alias + " " + key + " " + str(old) + " " + str(level) + "\n")

    def boot_held(self):
        """True when pins.json holds the BOOT button (GPIO0) low."""
        return self._levels().get(str(BOOT_PIN), 1) == 0

    # --- reset and boot ---------------------------------------------------------------------
    def halt(self, message):
        """Stop for good: exit status 78 (the runner does not boot again; a chip sits at its REPL)."""
        sys.exit(EXIT_HALT)

    def reset(self, reason):
        """Record `reason`, then end the process with status 75 (the runner restarts it)."""
        store.save(store.join(self._dir, "reset.json"), {"reason": str(reason)})
        global _booted
        _booted = None
        sys.exit(EXIT_RESET)

    def reset_reason(self):
        return _booted[1] if _booted else "power on"

    def _boot(self):
        """What the ROM bootloader does once per power-up: pick the slot to run."""
        global _booted
        if _booted is not None and _booted[2] == self._dir:
            return
        data = store.load(store.join(self._dir, "otadata.json"), None)
        if data is None:
            data = {"boot": "ota_0", "previous": None, "slots": {"ota_0": {"state": "VALID"}}}
            data["slots"]["ota_0"]["version"] = self._initial_version
        boot = data["boot"]
        slot = data["slots"][boot]
        if slot["state"] == "NEW":
            slot["state"] = "PENDING_VERIFY"
        elif slot["state"] == "PENDING_VERIFY" and data.get("previous"):
            slot["state"] = "ABORTED"  # reset before mark-valid: roll back
            boot = data["boot"] = data["previous"]
        data["running"] = boot
        store.save(store.join(self._dir, "otadata.json"), data)
        recorded = store.load(store.join(self._dir, "reset.json"), None)
        if recorded is not None:
            os.remove(store.join(self._dir, "reset.json"))
        reason = recorded["reason"] if recorded else "power on"
        _booted = (data, reason, self._dir)

    def _otadata(self):
        return _booted[0]

    # --- OTA --------------------------------------------------------------------------------
    def ota(self):
        """The slot the next update goes to (never the running one), or None without OTA."""
        if not self._has_ota:
            return None
        running = self._otadata()["running"]
        return SimPartition(self, "ota_1" if running == "ota_0" else "ota_0")

    def running_slot(self):
        return self._otadata()["running"]

    def record_version(self, label, version):
        """Remember the firmware version written into slot `label` (before set_boot)."""
        data = self._otadata()
        data["slots"][label] = {"state": "EMPTY", "version": version}
        store.save(store.join(self._dir, "otadata.json"), data)

    def _select(self, label):
        data = self._otadata()
        slot = data["slots"].setdefault(label, {"version": None})
        slot["state"] = "NEW"
        data["previous"] = data["running"]
        data["boot"] = label
        store.save(store.join(self._dir, "otadata.json"), data)

    def mark_valid(self):
        data = self._otadata()
        data["slots"][data["running"]]["state"] = "VALID"
        store.save(store.join(self._dir, "otadata.json"), data)

    def boot_state(self):
        data = self._otadata()
        return data["slots"][data["running"]]["state"]

    def firmware_version(self):
        data = self._otadata()
        return data["slots"][data["running"]].get("version") or "unknown"

    # --- the rest ---------------------------------------------------------------------------
    def connect_network(self, timeout_ms=0, feed=None):
        """No radio: up at once, unless network.json simulates a fault (the messages espboard gives)."""
        fault = store.load(store.join(self._dir, "network.json"), None)
        if not isinstance(fault, dict):
            return True
        if fault.get("wifi"):
            within = str(timeout_ms) + " ms, status " + str(fault["wifi"]) + " (simulated)"
            raise OSError("Wi-Fi " + repr(self.config.get("wifi_ssid", "")) + ": no connection within " + within)
        if fault.get("ntp"):
            raise OSError("time sync: no answer from " + (self.config.get("ntp_host") or "pool.ntp.org"))
        return True

    def watchdog(self, timeout_ms):
        return SimWatchdog(self, timeout_ms)

    def time(self):
        return int(time.time())

    def uptime(self):
        """Seconds since this process (the simulated boot) started, right past the tick wrap."""
        return clock.uptime_s()
