# gpio.write / gpio.pulse / gpio.read on the simulated board; the allowlist before anything moves.
import json

from jobdouble import Job
from jobs import ops
from mptest import raises
from opstate import fresh_board, pin_log


def _run(board, doc):
    op, doc, reason = ops.prepare(doc, board)
    assert reason is None, reason
    return op.run(Job(board, doc))


def test_write_by_alias_and_by_number():
    b = fresh_board()
    assert _run(b, {"operation": "gpio.write", "pin": "LED", "value": 1}) == {"pin": "LED", "value": "1"}
    assert _run(b, {"operation": "gpio.write", "pin": 25, "value": 1}) == {"pin": "25", "value": "1"}
    assert _run(b, {"operation": "gpio.write", "pin": "relay1", "value": 0})["value"] == "0"
    assert pin_log(b) == "LED 4 0 1\nRELAY1 25 0 1\nRELAY1 25 1 0\n"


def test_read_reports_the_input_level():
    b = fresh_board()
    with open(b.root + "/simboard/pins.json", "w") as f:
        json.dump({"34": 1}, f)
    assert _run(b, {"operation": "gpio.read", "pin": "BUTTON"}) == {"pin": "BUTTON", "value": "1"}
    assert _run(b, {"operation": "gpio.read", "pin": "LED"}) == {"pin": "LED", "value": "0"}
    assert pin_log(b) == ""


def test_flash_strapping_unknown_and_input_pins_are_rejected_and_nothing_moves():
    b = fresh_board()
    cases = [
        (6, "pin: 6 is a flash pin, never allowed"),
        (11, "pin: 11 is a flash pin, never allowed"),
        (0, "pin: 0 is a strapping pin, never allowed"),
        (2, "pin: 2 is a strapping pin, never allowed"),
        (5, "pin: 5 is a strapping pin, never allowed"),
        (12, "pin: 12 is a strapping pin, never allowed"),
        (15, "pin: 15 is a strapping pin, never allowed"),
        ("7", "pin: 7 is a flash pin, never allowed"),
        (23, "pin: 23 is not allowed for jobs on this board"),
        ("FLASH_CS", "pin: unknown alias FLASH_CS"),
        (True, "pin: alias or GPIO number expected"),
        ("BUTTON", "pin: BUTTON is an input"),
        (34, "pin: BUTTON is an input"),
    ]
    for pin, reason in cases:
        for doc in (
            {"operation": "gpio.write", "pin": pin, "value": 1},
            {"operation": "gpio.pulse", "pin": pin, "value": 1, "ms": 10},
        ):
            assert ops.prepare(doc, b)[2] == reason, (pin, ops.prepare(doc, b))
    assert ops.prepare({"operation": "gpio.read", "pin": 9}, b)[2] == "pin: 9 is a flash pin, never allowed"
    with raises(ValueError):
        b.pin(6)
    assert pin_log(b) == ""


def test_pulse_returns_to_the_previous_level():
    b = fresh_board()
    b.pin("RELAY2").value(1)
    details = _run(b, {"operation": "gpio.pulse", "pin": "RELAY2", "value": 0, "ms": 30})
    assert details == {"pin": "RELAY2", "value": "1", "ms": "30"}
    assert pin_log(b) == "RELAY2 26 0 1\nRELAY2 26 1 0\nRELAY2 26 0 1\n"


def test_canceled_pulse_leaves_the_pin_at_its_safe_level():
    b = fresh_board()
    doc = {"operation": "gpio.pulse", "pin": "LED", "value": 1, "ms": 3000}
    job = Job(b, doc)
    job.cancel_after = 0
    with raises(ops.Canceled):
        ops.find("gpio.pulse").run(job)
    assert b.pin("LED").value() == 0
    assert pin_log(b) == "LED 4 0 1\nLED 4 1 0\n"


def test_failed_pulse_leaves_the_pin_at_its_safe_level():
    b = fresh_board()
    b.pin("RELAY3").value(1)  # previous level 1; the safe level is 0
    job = Job(b, {"operation": "gpio.pulse", "pin": "RELAY3", "value": 0, "ms": 1500})

    def broken(details):
        raise OSError("link down")

    job.progress = broken
    with raises(OSError):
        ops.find("gpio.pulse").run(job)
    assert b.pin("RELAY3").value() == 0
