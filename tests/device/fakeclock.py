# fakeclock: jobs.clock's tick source replaced, to cross the 2^30 ms wrap in a moment. MIT licence.
import time

from jobs import clock


class FakeClock:
    """`with FakeClock(start, step_ms):` each tick read returns `start`, then advances `step_ms`
    (ticks_add: it wraps as the port's ticks do); jobs.clock counts from zero meanwhile."""

    def __init__(self, start, step_ms):
        self._now = start
        self._step = step_ms

    def _ticks(self):
        now = self._now
        self._now = time.ticks_add(now, self._step)
        return now

    def __enter__(self):
        self._saved = (clock._ticks, clock._last, clock._seconds, clock._ms)
        clock._ticks = self._ticks
        clock._last = self._ticks()
        clock._seconds = clock._ms = 0
        return self

    def __exit__(self, *exc):
        clock._ticks, clock._last, clock._seconds, clock._ms = self._saved
