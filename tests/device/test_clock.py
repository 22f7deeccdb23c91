# jobs.clock: uptime across the tick wrap, backoff bounds; inside MicroPython.
import time

from jobs import clock

_DAY_MS = 86_400_000


def _fake_ticks(start, step):
    state = [start]

    def ticks():
        now = state[0]
        state[0] = time.ticks_add(now, step)
        return now

    return ticks


def test_uptime_is_right_across_the_tick_wrap():
    # 31 days in steps of 3 days, starting 1 s before the wrap: ticks_diff(now, 0) goes
    # negative after 6.2 days on a 32-bit port; the accumulated uptime must not
    saved = (clock._ticks, clock._last, clock._seconds, clock._ms)
    try:
        clock._ticks = _fake_ticks(time.ticks_add(0, -1000), 3 * _DAY_MS)
        clock._last = clock._ticks()
        clock._seconds = clock._ms = 0
        seen = []
        for _ in range(10):
            seen.append(clock.uptime_s())
        expect = [(i + 1) * 3 * 86_400 for i in range(10)]
        assert seen == expect, seen
    finally:
        clock._ticks, clock._last, clock._seconds, clock._ms = saved


def test_uptime_counts_milliseconds_into_seconds():
    saved = (clock._ticks, clock._last, clock._seconds, clock._ms)
    try:
        clock._ticks = _fake_ticks(0, 300)
        clock._last = clock._ticks()
        clock._seconds = clock._ms = 0
        got = [clock.uptime_s() for _ in range(10)]
        assert got == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3], got
    finally:
        clock._ticks, clock._last, clock._seconds, clock._ms = saved


def test_backoff_doubles_up_to_the_ceiling_with_jitter():
    for attempt in range(30):
        d = min(100 << min(attempt, 24), 5000)
        for _ in range(20):
            ms = clock.backoff_ms(attempt, 100, 5000)
            assert d // 2 <= ms <= d, (attempt, ms)
    # devices that failed together do not retry together
    assert len(set(clock.backoff_ms(30, 1000, 8000) for _ in range(20))) > 1
