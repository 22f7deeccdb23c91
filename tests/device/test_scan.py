# The bounded JSON scanner (jobs.scan), inside MicroPython.
import gc
import json

from jobs.scan import ScanError, Scanner
from mptest import raises

# payloads as AWS IoT Jobs sends them: notify-next, start-next accepted, update rejected, nothing pending
NOTIFY_NEXT = (
    b'{"timestamp":1649756136,"execution":{"jobId":"v315_test","status":"QUEUED",'
    b'"queuedAt":1649756135,"lastUpdatedAt":1649756135,"versionNumber":1,"executionNumber":1,'
    b'"jobDocument":{"operation":"customJob","otherInfo":"someValue"}}}'
)
START_NEXT = (
    b'{"timestamp": 1747342050, "clientToken": "1a2b3c4d-7",\n "execution": {"jobId":"Job1",'
    b'"status":"IN_PROGRESS","statusDetails":{"step":"2 of 3"},"queuedAt":1,"startedAt":2,'
    b'"lastUpdatedAt":3,"versionNumber":2,"executionNumber":1,"jobDocument":{"ToDo":"Reboot"}}}'
)
REJECTED = (
    b'{"code":"VersionMismatch","message":"Expected version 99 but found version 1",'
    b'"clientToken":"tok-ver","timestamp":1649756136,'
    b'"executionState":{"status":"QUEUED","versionNumber":1}}'
)
EMPTY_NEXT = b'{"timestamp":1649755901}'

# escapes, surrogate pairs, multi-byte UTF-8, numbers of every shape, extra keys at all levels
TRICKY = (
    b'{"x":[1,-0,0.5,-1.25e+10,3E-2,1e5,true,false,null,{},[],""],"clientToken":"t\\u002d1",'
    b'"execution":{"extra":{"jobId":"not this one","status":[{"versionNumber":9}]},'
    b'"job\\u0049d":"j\\u00e9\xc3\xa9\\ud83d\\ude00\xf0\x9f\x98\x80","status":"IN_PROGRESS",'
    b'"versionNumber":12345678901,"executionNumber":-3,'
    b'"statusDetails":{"k":"v\\n\\t\\"\\\\\\/\\b\\f\\r"},'
    b'"jobDocument":{"a":[1,{"b":"\xe2\x82\xac"}],"c":null}},"code":"\\"q\\"","timestamp":0}'
)


def _fields(f):
    return (
        f.client_token,
        f.code,
        f.message,
        f.timestamp,
        f.has_execution,
        f.job_id,
        f.status,
        f.version_number,
        f.execution_number,
        f.state_status,
        f.state_version,
    )


def _kind(fn, *args):
    with raises(ScanError) as caught:
        fn(*args)
    return caught.value.kind, caught.value.offset


def test_notify_next_capture():
    f = Scanner().scan(NOTIFY_NEXT, len(NOTIFY_NEXT))
    assert _fields(f) == (None, None, None, 1649756136, True, "v315_test", "QUEUED", 1, 1, None, None)
    start, end = f.document
    assert json.loads(NOTIFY_NEXT[start:end]) == {"operation": "customJob", "otherInfo": "someValue"}
    assert f.status_details is None
    assert f.size == len(NOTIFY_NEXT) and not f.truncated


def test_start_next_accepted_with_status_details():
    f = Scanner().scan(START_NEXT)
    assert _fields(f) == ("1a2b3c4d-7", None, None, 1747342050, True, "Job1", "IN_PROGRESS", 2, 1, None, None)
    start, end = f.status_details
    assert json.loads(START_NEXT[start:end]) == {"step": "2 of 3"}
    start, end = f.document
    assert START_NEXT[start:end] == b'{"ToDo":"Reboot"}'


def test_rejected_with_execution_state():
    f = Scanner().scan(REJECTED)
    assert f.code == "VersionMismatch"
    assert f.message == "Expected version 99 but found version 1"
    assert (f.client_token, f.timestamp, f.has_execution) == ("tok-ver", 1649756136, False)
    assert (f.state_status, f.state_version) == ("QUEUED", 1)
    assert f.job_id is None and f.document is None


def test_empty_next_and_fields_reset_between_scans():
    sc = Scanner()
    sc.scan(START_NEXT)
    f = sc.scan(EMPTY_NEXT)
    assert _fields(f) == (None, None, None, 1649755901, False, None, None, None, None, None, None)
    assert f.document is None and f.status_details is None


def test_escapes_surrogates_and_utf8_are_decoded():
    f = Scanner().scan(TRICKY)
    assert f.client_token == "t-1"
    assert f.job_id == "j\u00e9\u00e9\U0001f600\U0001f600"
    assert f.code == '"q"'
    assert (f.status, f.version_number, f.execution_number, f.timestamp) == (
        "IN_PROGRESS",
        12345678901,
        -3,
        0,
    )
    start, end = f.status_details
    assert json.loads(TRICKY[start:end]) == {"k": 'v\n\t"\\/\b\f\r'}
    start, end = f.document
    assert json.loads(TRICKY[start:end]) == {"a": [1, {"b": "\u20ac"}], "c": None}


def test_buffer_may_be_bytearray_or_memoryview_with_spare_room():
    buf = bytearray(1024)
    buf[: len(NOTIFY_NEXT)] = NOTIFY_NEXT
    buf[len(NOTIFY_NEXT)] = ord("x")  # beyond n: never looked at
    sc = Scanner()
    for b in (buf, memoryview(buf)):
        f = sc.scan(b, len(NOTIFY_NEXT))
        assert f.job_id == "v315_test" and f.size == len(NOTIFY_NEXT)


def test_a_length_beyond_the_buffer_is_a_programming_error():
    with raises(ValueError):
        Scanner().scan(b"{}", 3)


def test_streaming_split_at_every_byte_gives_the_same_fields():
    sc = Scanner()
    for doc in (NOTIFY_NEXT, START_NEXT, REJECTED, TRICKY):
        whole = _fields(sc.scan(doc))
        for cut in range(len(doc) + 1):
            sc.begin()
            sc.feed(doc[:cut])
            sc.feed(doc[cut:])
            f = sc.end()
            assert _fields(f) == whole, (doc, cut)
            assert f.truncated and f.document is None and f.status_details is None
            assert f.size == len(doc)


def test_streaming_one_byte_at_a_time():
    sc = Scanner()
    whole = _fields(sc.scan(TRICKY))
    sc.begin()
    for k in range(len(TRICKY)):
        sc.feed(TRICKY[k : k + 1])
    assert _fields(sc.end()) == whole


def test_syntax_errors_have_kind_and_offset():
    sc = Scanner()
    cases = (
        (b"", ("truncated", 0)),
        (b"   ", ("truncated", 3)),
        (b'{"a":1', ("truncated", 6)),
        (b'{"a":"abc', ("truncated", 9)),
        (b'{"a":1,}', ("syntax", 7)),
        (b'{"a" 1}', ("syntax", 5)),
        (b'{"a":[1,]}', ("syntax", 8)),
        (b'{"a":[1 2]}', ("syntax", 8)),
        (b'{"a":1]', ("syntax", 6)),
        (b'{"a":01}', ("syntax", 6)),
        (b'{"a":1.}', ("number", 7)),
        (b'{"a":1e}', ("number", 7)),
        (b'{"a":-}', ("number", 6)),
        (b'{"a":+1}', ("syntax", 5)),
        (b'{"a":.5}', ("syntax", 5)),
        (b'{"a":NaN}', ("syntax", 5)),
        (b'{"a":Infinity}', ("syntax", 5)),
        (b'{"a":-Infinity}', ("number", 6)),
        (b'{"a":tru}', ("syntax", 8)),
        (b'{"a":nul}', ("syntax", 8)),
        (b'{"a":True}', ("syntax", 5)),
        (b"{'a':1}", ("syntax", 1)),
        (b'{"a":1} x', ("syntax", 8)),
        (b'{"a":1}{}', ("syntax", 7)),
        (b'{"a":1}\x00', ("syntax", 7)),
        (b'\xef\xbb\xbf{"a":1}', ("syntax", 0)),  # RFC 8259 allows refusing a BOM
        (b"[1]", ("type", 0)),
        (b'"text"', ("type", 0)),
        (b"42", ("type", 0)),
        (b'{"a":"\\x"}', ("escape", 7)),
        (b'{"a":"\\u12G4"}', ("escape", 10)),
        (b'{"a":"\\ud800"}', ("escape", 12)),
        (b'{"a":"\\ud800\\u0041"}', ("escape", 17)),
        (b'{"a":"\\udc00"}', ("escape", 11)),
        (b'{"a":"\x1f"}', ("string", 6)),
        (b'{"a":"\t"}', ("string", 6)),
        (b'{"a":"\xff"}', ("utf8", 6)),
        (b'{"a":"\xc0\x80"}', ("utf8", 6)),  # overlong
        (b'{"a":"\xe0\x80\x80"}', ("utf8", 7)),  # overlong
        (b'{"a":"\xed\xa0\x80"}', ("utf8", 7)),  # UTF-8 encoded surrogate
        (b'{"a":"\xf4\x90\x80\x80"}', ("utf8", 7)),  # above U+10FFFF
        (b'{"a":"\xc3"}', ("utf8", 7)),  # cut sequence
        (b'{"a":"\x80"}', ("utf8", 6)),
        (b'{"\xff":1}', ("utf8", 2)),
        (b'{"a":1,"a":\xff}', ("syntax", 11)),
    )
    for doc, expected in cases:
        got = _kind(sc.scan, doc)
        assert got == expected, (doc, got, expected)
        sc.begin()  # the same answer when streamed byte by byte
        for k in range(len(doc)):
            sc.feed(doc[k : k + 1])
        assert _kind(sc.end) == expected, (doc, "streamed")


def test_wrong_field_types_and_repeated_fields_are_refused():
    sc = Scanner()
    cases = (
        b'{"clientToken":5}',
        b'{"timestamp":"1"}',
        b'{"timestamp":1.5}',
        b'{"timestamp":1e3}',
        b'{"timestamp":true}',
        b'{"execution":[]}',
        b'{"execution":"x"}',
        b'{"execution":{"jobId":7}}',
        b'{"execution":{"versionNumber":"2"}}',
        b'{"executionState":{"versionNumber":{}}}',
    )
    for doc in cases:
        assert _kind(sc.scan, doc)[0] == "type", doc
    for doc in (b'{"code":"a","code":"b"}', b'{"execution":{"jobId":"a","jobId":"a"}}'):
        assert _kind(sc.scan, doc)[0] == "duplicate", doc


def test_null_fields_are_absent_and_other_places_are_ignored():
    sc = Scanner()
    f = sc.scan(b'{"execution":null,"clientToken":null,"timestamp":null}')
    assert _fields(f) == (None, None, None, None, False, None, None, None, None, None, None)
    f = sc.scan(b'{"execution":{"jobDocument":null,"statusDetails":null,"jobId":null}}')
    assert f.has_execution and f.document is None and f.status_details is None and f.job_id is None
    # the same names deeper down or in the wrong object are not ours, whatever their type
    f = sc.scan(b'{"a":{"clientToken":1,"execution":2},"executionState":{"jobId":3},"jobId":{}}')
    assert _fields(f) == (None, None, None, None, False, None, None, None, None, None, None)
    # jobDocument and statusDetails are handed out as spans whatever their JSON type
    doc = b'{"execution":{"jobDocument":"text","statusDetails":12}}'
    f = sc.scan(doc)
    assert doc[f.document[0] : f.document[1]] == b'"text"'
    assert doc[f.status_details[0] : f.status_details[1]] == b"12"


def test_depth_limit():
    sc = Scanner(max_depth=4)
    assert sc.scan(b'{"a":[[{"b":1}]]}').size == 17
    assert _kind(sc.scan, b'{"a":[[{"b":[]}]]}') == ("depth", 12)
    deep = b'{"a":' + b"[" * 1000 + b"]" * 1000 + b"}"
    assert _kind(Scanner().scan, deep) == ("depth", 36)


def test_string_limit_and_message_truncation():
    sc = Scanner(max_str=8)
    assert sc.scan(b'{"clientToken":"12345678"}').client_token == "12345678"
    assert _kind(sc.scan, b'{"clientToken":"123456789"}') == ("string", 15)
    assert _kind(sc.scan, b'{"execution":{"jobId":"123456789"}}')[0] == "string"
    # strings nobody keeps may be any length
    assert sc.scan(b'{"other":"' + b"x" * 5000 + b'"}').size == 5012
    # a long message is cut, at a character boundary, never refused
    assert sc.scan(b'{"message":"abcdefghij"}').message == "abcdefgh"
    assert sc.scan(b'{"message":"abcdefg\xc3\xa9"}').message == "abcdefg"
    assert sc.scan(b'{"message":"abcde\xe2\x82\xac\xe2\x82\xac"}').message == "abcde\u20ac"


def test_number_length_limit():
    sc = Scanner()
    assert sc.scan(b'{"a":' + b"9" * 100 + b"}").size == 106
    assert _kind(sc.scan, b'{"a":' + b"9" * 101 + b"}") == ("number", 5)
    assert sc.scan(b'{"a":1.' + b"5" * 98 + b"}").size == 106


def test_feed_after_an_error_does_nothing_and_end_repeats_it():
    sc = Scanner()
    sc.begin()
    sc.feed(b'{"a":\x01')
    sc.feed(b"anything at all")
    assert _kind(sc.end) == ("syntax", 5)
    f = sc.scan(NOTIFY_NEXT)  # and the scanner is ready again
    assert f.job_id == "v315_test"


def test_a_failed_scan_keeps_what_it_found_before_the_error():
    sc = Scanner()
    sc.scan(NOTIFY_NEXT)
    _kind(sc.scan, START_NEXT[:-1])
    f = sc.fields
    assert f.client_token is not None and f.job_id is not None  # from this message, not the last
    assert f.document is not None and f.size == 0  # no size: the message never completed


def _allocated(fn):
    fn()
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        fn()
        return gc.mem_alloc() - before
    finally:
        gc.enable()


def test_scan_allocates_only_what_it_returns():
    sc = Scanner()
    buf = bytearray(START_NEXT)
    n = len(buf)
    used = _allocated(lambda: sc.scan(buf, n))
    loads = _allocated(lambda: json.loads(buf))
    print("scan allocated", used, "bytes; json.loads", loads)
    assert used <= 512, used  # 4 short strings, 2 spans, their temporaries
    # a large document costs no more: nothing grows with the message
    big = bytearray(b'{"execution":{"jobId":"j","jobDocument":{"k":"' + b"v" * 20000 + b'"}}}')
    used_big = _allocated(lambda: sc.scan(big, len(big)))
    print("scan of", len(big), "bytes allocated", used_big)
    assert used_big <= 256, used_big


def test_streaming_allocates_nothing_per_chunk():
    sc = Scanner()
    chunk = bytearray(b'{"execution":{"jobId":"job-1","versionNumber":3,"jobDocument":{"k":[')
    filler = bytearray(b'"abcdefghijklmnopqrstuvwxyz\xc3\xa9\\u00e9\\n", 12345, true, ' * 100)
    tail = bytearray(b'"x"]}}}')

    def stream(chunks):
        sc.begin()
        sc.feed(chunk)
        for _ in range(chunks):
            sc.feed(filler)
        sc.feed(tail)
        return sc.end()

    small = _allocated(lambda: stream(1))
    large = _allocated(lambda: stream(50))
    print("streamed", len(filler) + 80, "bytes:", small, "B;", 50 * len(filler) + 80, "bytes:", large, "B")
    f = stream(50)
    assert (f.job_id, f.version_number, f.truncated) == ("job-1", 3, True)
    assert large == small, (small, large)
