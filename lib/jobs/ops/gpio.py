# jobs.ops.gpio: gpio.write, gpio.pulse, gpio.read. MIT licence.
"""GPIO operations on the pins the board allows for jobs (alias or number).

The allowlist is checked by ops.prepare before anything moves, and again by board.pin().
A pulse restores the previous level; a pulse that is canceled or fails mid-way leaves the pin
at the board's safe level.
"""

import time

from micropython import const

from jobs import ops

MAX_PULSE_MS = const(60000)
_SLICE_MS = const(250)  # cancel checks during a pulse
_PROGRESS_MS = const(1000)


def _output(doc, board):
    number, direction, safe, alias = board.resolve(doc["pin"])  # the PIN check resolved it already
    if direction != "out":
        return "pin: " + alias + " is an input"
    return None


class Write(ops.Op):
    name = "gpio.write"
    idempotent = True
    params = (ops.Param("pin", ops.PIN), ops.Param("value", ops.INT, lo=0, hi=1))
    idempotent = True

    def check(self, doc, board):
        return _output(doc, board)

    def run(self, job):
        pin = job.board.pin(job.doc["pin"])
        pin.value(job.doc["value"])
        return {"pin": str(job.doc["pin"]), "value": str(pin.value())}


class Pulse(ops.Op):
    name = "gpio.pulse"
    params = (
        ops.Param("pin", ops.PIN),
        ops.Param("value", ops.INT, lo=0, hi=1),
        ops.Param("ms", ops.INT, lo=1, hi=MAX_PULSE_MS),
    )

    def check(self, doc, board):
        return _output(doc, board)

    def run(self, job):
        board = job.board
        safe = board.resolve(job.doc["pin"])[2]
        pin = board.pin(job.doc["pin"])
        before = pin.value()
        finished = False
        try:
            pin.value(job.doc["value"])
            start = time.ticks_ms()
            last_report = start
            while True:
                left = job.doc["ms"] - time.ticks_diff(time.ticks_ms(), start)
                if left <= 0:
                    break
                time.sleep_ms(min(left, _SLICE_MS))
                if time.ticks_diff(time.ticks_ms(), last_report) >= _PROGRESS_MS:
                    last_report = time.ticks_ms()
                    if not job.progress({"step": "pulsing", "pin": str(job.doc["pin"])}):
                        raise ops.Canceled()
            pin.value(before)
            finished = True
        finally:
            if not finished:
                pin.value(safe)
        return {"pin": str(job.doc["pin"]), "value": str(before), "ms": str(job.doc["ms"])}


class Read(ops.Op):
    name = "gpio.read"
    idempotent = True
    params = (ops.Param("pin", ops.PIN),)
    idempotent = True

    def run(self, job):
        return {"pin": str(job.doc["pin"]), "value": str(job.board.pin(job.doc["pin"]).value())}


OPS = (Write(), Pulse(), Read())
