# jobs.telemetry: periodic device status to logi2/device/<thingName>. MIT licence.
"""A small JSON status message on an interval from config (`telemetry_interval_s`), QoS 0,
published retained so the last one can be read back (AWS IoT's retained-message API):

    {"uptime":123,"heap_free":40960,"job":"job-7","fw":"1.23.0","app":"0.1.0",
     "jobs_ok":3,"jobs_failed":1,"given_up":0,"reconnects":0,"ignored":2}

The counters survive a reset: they are saved (`telemetry.json` at the device root) when they
changed by the time a message is sent and before an intentional reset, and counted on from
there at the next boot; `uptime` is since this boot. The size is bounded: every field is a
number or a string of bounded length (the job id is at most 64 characters, versions 32).
The engine builds this only when telemetry is on.
"""

import gc
import sys
import time

from jobs import clock, store

_COUNTERS = ("jobs_ok", "jobs_failed", "given_up", "reconnects", "ignored")


def topic(thing_name):
    if isinstance(thing_name, str):
        thing_name = thing_name.encode()
    return b"logi2/device/" + thing_name


def _text(value, limit=32):
    value = "" if value is None else str(value)[:limit]
    return '"' + "".join(c if c not in '"\\' and " " <= c <= "~" else "_" for c in value) + '"'


def firmware_version():
    v = sys.implementation.version
    return str(v[0]) + "." + str(v[1]) + "." + str(v[2])


class Telemetry:
    def __init__(self, cfg, board):
        self.topic = topic(cfg["thing_name"])
        self.interval_s = cfg["telemetry_interval_s"]
        self.app_version = cfg["app_version"]
        self.path = store.join(getattr(board, "root", ""), "telemetry.json")
        saved = store.load(self.path, {})
        self.base = {k: saved[k] for k in _COUNTERS if isinstance(saved.get(k), int)}
        self._saved = None
        self._last = None

    def totals(self, stats):
        """The counters since the first boot: saved ones plus this boot's."""
        base = self.base
        return {k: base.get(k, 0) + int(stats.get(k, 0)) for k in _COUNTERS}

    def message(self, stats):
        """The telemetry payload (bytes) for `stats` (dict of counters and the current job)."""
        parts = [
            '{"uptime":' + str(clock.uptime_s()),
            '"heap_free":' + str(gc.mem_free()),
            '"job":' + (_text(stats.get("job"), 64) if stats.get("job") else "null"),
            '"fw":' + _text(firmware_version()),
            '"app":' + _text(self.app_version or "none"),
        ]
        totals = self.totals(stats)
        for key in _COUNTERS:
            parts.append('"' + key + '":' + str(totals[key]))
        return (",".join(parts) + "}").encode()

    def due(self):
        if not self.interval_s:
            return False
        if self._last is None:
            return True
        return time.ticks_diff(time.ticks_ms(), self._last) >= self.interval_s * 1000

    def send(self, link, stats):
        """Publish (QoS 0, retained) now; the caller checks `due()` first."""
        self._last = time.ticks_ms()
        link.publish(self.topic, self.message(stats), retain=True, qos=0)
        self.save(stats)

    def save(self, stats):
        """Keep the counters across a reset (written only when they changed)."""
        totals = self.totals(stats)
        if totals != self._saved:
            store.save(self.path, totals)
            self._saved = totals

    def ms_until_due(self):
        if not self.interval_s:
            return 3600000
        if self._last is None:
            return 0
        return max(0, self.interval_s * 1000 - time.ticks_diff(time.ticks_ms(), self._last))
