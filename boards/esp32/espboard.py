# espboard: what every ESP32-family board does; board.py of each chip adds its pin table. MIT licence.
"""Shared logic of the esp32, esp32s3 and esp32c3 boards (deploy this file with their board.py).

Reset reasons are recorded in NVS (namespace "jobs") before an intentional reset, because
machine.reset_cause() cannot tell machine.reset() from a crash. OTA follows ESP-IDF: the next
update partition, set_boot(), hard reset, mark_app_valid_cancel_rollback() after the self-test.
"""

import json
import os
import sys
import time

import esp32
import machine
import network
from jobs import clock
from micropython import const

_EPOCH_2000 = const(946684800)  # seconds from 1970-01-01 to 2000-01-01
_NVS_KEY = "reset"
_OTA_FILE = "/ota.json"  # {"versions": {label: version}, "pending": label or None}

_CAUSES = {
    machine.PWRON_RESET: "power on",
    machine.HARD_RESET: "hard reset",
    machine.WDT_RESET: "watchdog",
    machine.DEEPSLEEP_RESET: "deep sleep",
    machine.SOFT_RESET: "soft reset",
}

_recorded = None  # reason read from NVS at the first Board() of this boot


def _read_reason():
    nvs = esp32.NVS("jobs")
    buf = bytearray(64)
    try:
        n = nvs.get_blob(_NVS_KEY, buf)
    except OSError:
        return None
    nvs.erase_key(_NVS_KEY)
    nvs.commit()
    return bytes(buf[:n]).decode()


class EspBoard:
    """Base class; a chip's board.py sets `name` and `table` (a jobs.ops.pins.PinTable)."""

    name = "esp32"
    table = None
    pins = {}

    @classmethod
    def resolve(cls, ref):
        return cls.table.resolve(ref)  # type: ignore[union-attr]  # set by every subclass

    def __init__(self, config=None):
        global _recorded
        self.config = config or {}
        self.root = "/"
        if _recorded is None:
            _recorded = _read_reason() or _CAUSES.get(machine.reset_cause(), "unknown")
        for alias in self.pins:
            number, direction, safe = self.pins[alias]
            if direction == "out":
                machine.Pin(number, machine.Pin.OUT, value=safe)
        self._ota = self._load_ota()
        running = self._running_label()
        pending = self._ota.get("pending")
        if pending and pending != running:
            # the bootloader rolled back (ABORTED): that image never became valid
            self._ota["pending"] = None
            self._save_ota()

    def pin(self, ref):
        number, direction, safe, alias = self.table.resolve(ref)  # type: ignore[union-attr]
        return machine.Pin(number, machine.Pin.OUT if direction == "out" else machine.Pin.IN)

    def reset(self, reason):
        nvs = esp32.NVS("jobs")
        nvs.set_blob(_NVS_KEY, str(reason)[:64].encode())
        nvs.commit()
        machine.reset()

    def reset_reason(self):
        return _recorded

    # --- OTA --------------------------------------------------------------------------------
    def ota(self):
        """The next update partition, or None when the partition table has no OTA slots."""
        try:
            # the stub types `id` as str; the port also takes Partition.RUNNING / BOOT (ints)
            running = esp32.Partition(esp32.Partition.RUNNING)  # pyright: ignore[reportArgumentType]
            return running.get_next_update()
        except OSError:
            return None

    def _running_label(self):
        # stub: `id` typed as str, but Partition.RUNNING (an int) is what the port documents
        return esp32.Partition(esp32.Partition.RUNNING).info()[4]  # pyright: ignore[reportArgumentType]

    def running_slot(self):
        return self._running_label()

    def _load_ota(self):
        try:
            with open(_OTA_FILE) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {"versions": {}, "pending": None}

    def _save_ota(self):
        with open(_OTA_FILE + ".tmp", "w") as f:
            json.dump(self._ota, f)
        os.rename(_OTA_FILE + ".tmp", _OTA_FILE)

    def record_version(self, label, version):
        """Remember the version written into `label`; it is pending until mark_valid()."""
        self._ota["versions"][label] = version
        self._ota["pending"] = label
        self._save_ota()

    def mark_valid(self):
        try:
            esp32.Partition.mark_app_valid_cancel_rollback()
        except OSError:
            pass  # -261: no rollback support in this build; nothing to cancel
        if self._ota.get("pending"):
            self._ota["pending"] = None
            self._save_ota()

    def boot_state(self):
        if self._ota.get("pending") == self._running_label():
            return "PENDING_VERIFY"
        return "VALID"

    def firmware_version(self):
        version = self._ota["versions"].get(self._running_label())
        return version or "micropython-" + ".".join(str(n) for n in sys.implementation.version[:3])

    # --- network and time -------------------------------------------------------------------
    def connect_network(self, timeout_ms=20000):
        """Wi-Fi station up within timeout_ms, then NTP (TLS needs a true clock); raises OSError."""
        wlan = network.WLAN(network.STA_IF)
        wlan.active(True)
        if not wlan.isconnected():
            wlan.connect(self.config.get("wifi_ssid", ""), self.config.get("wifi_password", ""))
            deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
            while not wlan.isconnected():
                if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                    wlan.active(False)
                    status = str(wlan.status())
                    raise OSError("Wi-Fi: no connection within " + str(timeout_ms) + " ms, status " + status)
                time.sleep_ms(100)
        import ntptime

        ntptime.host = self.config.get("ntp_host") or "pool.ntp.org"
        for attempt in range(3):
            if attempt:
                time.sleep_ms(250 << attempt)
            try:
                ntptime.settime()
                return True
            except OSError:
                pass
        raise OSError("time sync: no answer from " + ntptime.host)

    def watchdog(self, timeout_ms):
        return machine.WDT(timeout=timeout_ms)

    def time(self):
        now = int(time.time())
        return now + _EPOCH_2000 if time.gmtime(0)[0] == 2000 else now

    def uptime(self):
        return clock.uptime_s()  # ticks_diff(ticks_ms(), 0) goes negative after 6.2 days
