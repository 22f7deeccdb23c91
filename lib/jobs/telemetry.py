# jobs.telemetry: periodic device status to logi2/device/<thingName>. MIT licence.
"""A small JSON status message, QoS 0, on an interval from config (`telemetry_interval_s`).

    {"uptime":123,"heap_free":40960,"job":"job-7","fw":"1.23.0","app":"0.1.0",
     "jobs_ok":3,"jobs_failed":1,"reconnects":0,"ignored":2}

Its size is bounded: every field is a number or a string of bounded length (the job id is at
most 64 characters, versions are cut to 32).
"""

import gc
import sys
import time

import jobs


def topic(thing_name):
    if isinstance(thing_name, str):
        thing_name = thing_name.encode()
    return b"logi2/device/" + thing_name


def _text(value, limit=32):
    value = "" if value is None else str(value)[:limit]
    return '"' + "".join(c if c not in '"\\' and ord(c) >= 32 else "_" for c in value) + '"'


def firmware_version():
    v = sys.implementation.version
    return str(v[0]) + "." + str(v[1]) + "." + str(v[2])


class Telemetry:
    def __init__(self, thing_name, interval_s, app_version=""):
        self.topic = topic(thing_name)
        self.interval_s = interval_s
        self.app_version = app_version or jobs.__version__
        self.started = time.ticks_ms()
        self._last = None

    def message(self, stats):
        """The telemetry payload (bytes) for `stats` (dict of counters and the current job)."""
        up = time.ticks_diff(time.ticks_ms(), self.started) // 1000
        parts = [
            '{"uptime":' + str(up),
            '"heap_free":' + str(gc.mem_free()),
            '"job":' + (_text(stats.get("job"), 64) if stats.get("job") else "null"),
            '"fw":' + _text(firmware_version()),
            '"app":' + _text(self.app_version),
        ]
        for key in ("jobs_ok", "jobs_failed", "reconnects", "ignored"):
            parts.append('"' + key + '":' + str(int(stats.get(key, 0))))
        return (",".join(parts) + "}").encode()

    def due(self):
        if not self.interval_s:
            return False
        if self._last is None:
            return True
        return time.ticks_diff(time.ticks_ms(), self._last) >= self.interval_s * 1000

    def send(self, link, stats):
        """Publish (QoS 0) now; the caller checks `due()` first."""
        self._last = time.ticks_ms()
        link.publish(self.topic, self.message(stats), qos=0)

    def ms_until_due(self):
        if not self.interval_s:
            return 3600000
        if self._last is None:
            return 0
        return max(0, self.interval_s * 1000 - time.ticks_diff(time.ticks_ms(), self._last))
