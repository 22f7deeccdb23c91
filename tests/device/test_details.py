# jobs.details: statusDetails AWS accepts, whatever a job's document held; inside MicroPython.
import json

from jobs import details as D

_CESU_ROCKET = json.loads('"\\ud83d\\ude80"')  # what MicroPython's json makes of a surrogate pair


def _decoded(details, limit=2048):
    out = D.encode(details, limit)
    assert len(out) <= limit, (len(out), limit)
    return json.loads(out), out


def _utf16_units(s):
    return sum(2 if ord(c) >= 0x10000 else 1 for c in s)


def test_plain_details_pass_unchanged():
    got, raw = _decoded({"pin": "LED", "value": "1"})
    assert got == {"pin": "LED", "value": "1"}
    assert raw in (b'{"pin":"LED","value":"1"}', b'{"value":"1","pin":"LED"}')


def test_cesu8_surrogate_pairs_become_the_character_they_encode():
    raw = D.encode({"echo": "a" + _CESU_ROCKET + "b"}, 256)
    assert raw == b'{"echo":"a\xf0\x9f\x9a\x80b"}', raw
    raw.decode()  # well-formed UTF-8


def test_category_c_characters_are_replaced():
    controls = "".join(chr(c) for c in (0, 7, 10, 13, 27, 127))
    got, raw = _decoded({"reason": controls + "x"})
    assert got["reason"] == "      x", got
    for cp in (0x85, 0x9F):
        assert _decoded({"r": chr(cp)})[0]["r"] == " "
    for cp in (0xAD, 0x600, 0x605, 0x61C, 0x6DD, 0x70F, 0x180E, 0x200B, 0x200F, 0x202A, 0x202E, 0x2060,
               0x2064, 0x2066, 0x206F, 0xFEFF, 0xFFF9, 0xFFFB, 0xE000, 0xF8FF, 0xFDD0, 0xFFFE, 0xFFFF,
               0x1FFFE, 0x1D173, 0xE0001, 0xE007F, 0xF0000, 0x10FFFD):  # fmt: skip
        got = _decoded({"r": "a" + chr(cp) + "b"})[0]["r"]
        assert got == "a\ufffdb", (hex(cp), got)
    lone = json.loads('"x\\ud800y"')
    assert _decoded({"r": lone})[0]["r"] == "x\ufffdy"


def test_ordinary_text_of_every_plane_is_kept():
    text = "é ß ж 中文 \u2603 \U0001f680 \U00020000 \U000e0100"  # incl. a variation selector (Mn)
    assert _decoded({"r": text})[0]["r"] == text


def test_keys_follow_the_pattern_and_the_limits():
    got = _decoded({"bad key!": "1", "k" * 200: "2", "": "3", "ünï": "4"})[0]
    assert got["bad_key_"] == "1" and got["k" * 128] == "2" and got["_n_"] == "4"
    assert "" not in got and len(got) == 3, got


def test_values_are_cut_to_1024_utf16_units_and_never_empty():
    got = _decoded({"a": "x" * 3000, "b": "", "c": 5, "d": None}, 8000)[0]
    assert len(got["a"]) == 1024 and got["b"] == "-" and got["c"] == "5" and got["d"] == "None"
    rockets = _decoded({"r": "\U0001f680" * 700}, 8000)[0]["r"]
    assert _utf16_units(rockets) == 1024, _utf16_units(rockets)
    quotes = _decoded({"q": '"\\' * 600}, 8000)[0]["q"]
    assert quotes == '"\\' * 512, len(quotes)


def test_at_most_ten_pairs_with_the_reason_kept():
    many = {"reason": "kept"}
    for i in range(20):
        many["k" + str(i)] = "v"
    got = _decoded(many)[0]
    assert len(got) == 10 and got["reason"] == "kept"


def test_the_size_limit_holds_and_the_reason_comes_first():
    big = {"reason": "r" * 300}
    for i in range(9):
        big["k" + str(i)] = "v" * 900
    got, raw = _decoded(big, 1024)
    assert got["reason"] == "r" * 300 and len(raw) <= 1024, raw
    assert len(got) < 10


def test_not_a_dict_is_empty():
    assert D.encode(None, 100) == b"{}" and D.encode([1, 2], 100) == b"{}" and D.encode({}, 100) == b"{}"
