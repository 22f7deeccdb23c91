# clientToken standard: "<bootId>-<n>", bounded outstanding set, inside MicroPython.
import gc

from jobs import token
from jobs.token import Tokens
from mptest import live_heap, raises


def _is_hex8(s):
    return len(s) == 8 and all(c in "0123456789abcdef" for c in s)


def test_boot_id_is_eight_random_hex_digits():
    ids = [token.new_boot_id() for _ in range(50)]
    for boot_id in ids:
        assert _is_hex8(boot_id), boot_id
    assert len(set(ids)) >= 49  # 32 random bits: a repeat in 50 draws is ~3e-7


def test_tokens_have_the_standard_form():
    tokens = Tokens()
    assert _is_hex8(tokens.boot_id)
    first, second = tokens.new(), tokens.new()
    assert first == tokens.boot_id + "-1"
    assert second == tokens.boot_id + "-2"
    assert len(first) <= 64


def test_an_outstanding_token_is_taken_once():
    tokens = Tokens("cafe0001")
    tok = tokens.new()
    assert tokens.outstanding() == 1
    assert tokens.take(tok)
    assert tokens.outstanding() == 0
    assert not tokens.take(tok)
    assert tokens.ignored == 1


def test_unknown_foreign_and_missing_tokens_are_ignored_and_counted():
    tokens = Tokens("cafe0001")
    tokens.new()
    for other in ("deadbeef-1", "cafe0001-2", "cafe0001-", "", None, "cafe0001-1x"):
        assert not tokens.take(other)
    assert tokens.ignored == 6
    assert tokens.take("cafe0001-1")


def test_a_token_from_an_earlier_boot_is_ignored():
    before = Tokens("00000001")
    old = before.new()
    after = Tokens("00000002")
    after.new()
    assert not after.take(old)
    assert after.ignored == 1


def test_outstanding_set_is_bounded_and_drops_the_oldest():
    tokens = Tokens("abc", capacity=4)
    issued = [tokens.new() for _ in range(10)]
    assert tokens.outstanding() == 4
    assert tokens.dropped == 6
    for old in issued[:6]:
        assert not tokens.take(old)
    for recent in issued[6:]:
        assert tokens.take(recent)
    assert tokens.outstanding() == 0


def test_forget_stops_waiting_without_counting():
    tokens = Tokens("abc")
    tok = tokens.new()
    assert tokens.forget(tok)
    assert tokens.ignored == 0
    assert not tokens.take(tok)
    assert tokens.ignored == 1


def test_memory_does_not_grow_with_run_time():
    live_heap()
    tokens = Tokens("abc", capacity=8)
    for _ in range(100):
        tokens.take(tokens.new())
    gc.collect()
    base = gc.mem_alloc()
    for i in range(5000):
        tok = tokens.new()
        if i % 3:
            tokens.take(tok)  # every third answer is lost
    gc.collect()
    grown = gc.mem_alloc() - base
    print("heap growth over 5000 requests:", grown, "bytes; outstanding", tokens.outstanding())
    assert tokens.outstanding() <= 8
    assert grown < 512, grown


def test_counter_wraps_and_tokens_stay_short():
    tokens = Tokens("ffffffff")
    tokens._n = 999_999_998
    assert tokens.new() == "ffffffff-999999999"
    assert tokens.new() == "ffffffff-1"


def test_bad_boot_ids_and_capacity_are_refused():
    for bad in ("", "a-b", "a" * 17, 5, "caf\u00e9"):
        with raises(ValueError):
            Tokens(bad)
    with raises(ValueError):
        Tokens("abc", capacity=0)
