# The device-test helpers themselves, run inside MicroPython.
import sys

from mptest import Skip, raises, skip


def test_runs_inside_micropython():
    assert sys.implementation.name == "micropython"


def test_raises_catches_the_named_exception():
    with raises(ValueError) as caught:
        int("not a number")
    assert isinstance(caught.value, ValueError)


def test_raises_fails_when_nothing_is_raised():
    try:
        with raises(KeyError):
            pass
    except AssertionError as error:
        assert "did not raise KeyError" in str(error)
    else:
        raise AssertionError("raises() let a silent block pass")


def test_raises_lets_other_exceptions_through():
    with raises(TypeError):
        with raises(KeyError):
            raise TypeError("other")


def test_skip_raises_skip():
    with raises(Skip) as caught:
        skip("not on this board")
    assert caught.value.args[0] == "not on this board"
