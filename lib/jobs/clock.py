# jobs.clock: uptime that survives the tick wrap, and the one backoff rule. MIT licence.
"""Time helpers every part of the device shares.

    clock.uptime_s()                 # seconds since boot, right past the tick wrap
    clock.backoff_ms(attempt, lo, hi)   # exponential backoff with jitter, in [d/2, d]
    clock.sleep(ms, feed)            # sleep, calling feed() at least once a second (a watchdog)

On 32-bit ports (the ESP32) `ticks_ms()` wraps at 2^30 ms (12.4 days) and `ticks_diff()` is
right only for intervals under 2^29 ms (6.2 days), so an uptime counted as
`ticks_diff(now, boot)` goes negative after 6.2 days. `uptime_s()` adds up tick deltas
instead: it stays right as long as it is called at least once every 6 days (the engine calls
it on every turn of its loop). Seconds and the millisecond remainder are kept apart so the
count stays a small int for 34 years.
"""

import random
import time

_ticks = time.ticks_ms  # a test replaces it to cross the wrap in a moment
_last = _ticks()
_seconds = 0
_ms = 0


def uptime_s():
    """Seconds since this module was imported (at boot)."""
    global _last, _seconds, _ms
    now = _ticks()
    ms = _ms + time.ticks_diff(now, _last)
    _last = now
    if ms >= 1000:
        _seconds += ms // 1000
        ms %= 1000
    _ms = ms
    return _seconds


def backoff_ms(attempt, lo, hi):
    """Delay before retry number `attempt` (0 first): lo doubled per attempt up to hi, with
    jitter (a value in [d/2, d]) so devices that failed together do not retry together."""
    d = lo
    for _ in range(min(attempt, 24)):
        d *= 2
        if d >= hi:
            d = hi
            break
    half = d // 2
    return half + (random.getrandbits(20) % (d - half + 1))


def sleep(ms, feed=None):
    """Sleep `ms` (0: not at all), calling feed() (a watchdog's) first and before each slice of
    at most a second."""
    while True:
        if feed is not None:
            feed()
        if ms <= 0:
            return
        step = min(ms, 1000)
        time.sleep_ms(step)
        ms -= step
