# Jobs topic building and classification, inside MicroPython.
import gc

from jobs import topics
from jobs.topics import Topics
from mptest import raises

T = Topics(b"thing-1")
P = b"$aws/things/thing-1/jobs/"


def test_builds_every_request_topic():
    assert T.get_pending() == P + b"get"
    assert T.start_next() == P + b"start-next"
    assert T.describe("job-1") == P + b"job-1/get"
    assert T.describe("$next") == P + b"$next/get"
    assert T.update("job_2") == P + b"job_2/update"
    assert P + b"notify-next" in T.subscriptions()


def test_str_and_bytes_names_build_the_same_topics():
    assert Topics("thing-1").update(b"j") == Topics(b"thing-1").update("j") == P + b"j/update"


def test_bad_thing_names_are_refused():
    for bad in ("", "a" * 129, "thing 1", "thing/1", "th#ing", "t+", "thing\u00e9", b"a\x00"):
        with raises(ValueError):
            Topics(bad)
    assert Topics("a:b_c-D9" + "x" * 120).thing_name == b"a:b_c-D9" + b"x" * 120


def test_thing_and_job_id_validation():
    assert topics.valid_thing_name("a" * 128)
    assert not topics.valid_thing_name("a" * 129)
    assert topics.valid_thing_name("x:y")
    assert topics.valid_job_id("a" * 64)
    assert not topics.valid_job_id("a" * 65)
    assert not topics.valid_job_id("")
    assert not topics.valid_job_id("x:y")  # ':' is allowed in thing names only
    assert not topics.valid_job_id("$next")
    assert not topics.valid_job_id(None)
    assert topics.valid_job_id(b"Job_1-a")


def test_bad_job_ids_are_refused_when_building():
    for bad in ("", "a" * 65, "a/b", "+", "#", "x:y", "\u00e9"):
        with raises(ValueError):
            T.update(bad)
        with raises(ValueError):
            T.describe(bad)
    with raises(ValueError):
        T.update("$next")  # there is no $next/update


def test_classifies_every_answer_topic():
    cases = (
        (b"get/accepted", topics.GET_ACCEPTED, None),
        (b"get/rejected", topics.GET_REJECTED, None),
        (b"start-next/accepted", topics.START_NEXT_ACCEPTED, None),
        (b"start-next/rejected", topics.START_NEXT_REJECTED, None),
        (b"job-1/get/accepted", topics.DESCRIBE_ACCEPTED, "job-1"),
        (b"job-1/get/rejected", topics.DESCRIBE_REJECTED, "job-1"),
        (b"$next/get/accepted", topics.DESCRIBE_ACCEPTED, "$next"),
        (b"$next/get/rejected", topics.DESCRIBE_REJECTED, "$next"),
        (b"job-1/update/accepted", topics.UPDATE_ACCEPTED, "job-1"),
        (b"job-1/update/rejected", topics.UPDATE_REJECTED, "job-1"),
        (b"notify", topics.NOTIFY, None),
        (b"notify-next", topics.NOTIFY_NEXT, None),
    )
    for rest, kind, job_id in cases:
        assert T.classify(P + rest) == (kind, job_id), rest
        assert T.classify(memoryview(P + rest)) == (kind, job_id), rest
        assert T.classify(bytearray(P + rest)) == (kind, job_id), rest


def test_job_ids_named_like_fixed_topics_are_not_confused():
    for name in (b"get", b"start-next", b"notify", b"notify-next", b"update", b"accepted"):
        job = name.decode()
        assert T.classify(P + name + b"/get/accepted") == (topics.DESCRIBE_ACCEPTED, job)
        assert T.classify(P + name + b"/get/rejected") == (topics.DESCRIBE_REJECTED, job)
        assert T.classify(P + name + b"/update/accepted") == (topics.UPDATE_ACCEPTED, job)
        assert T.classify(P + name + b"/update/rejected") == (topics.UPDATE_REJECTED, job)
    # describing job "get" is .../jobs/get/get; its answer has three levels, GetPending's two
    assert T.classify(P + b"get/get/accepted") == (topics.DESCRIBE_ACCEPTED, "get")
    assert T.classify(P + b"get/accepted") == (topics.GET_ACCEPTED, None)
    assert T.classify(P + b"notify-next/get/accepted") == (topics.DESCRIBE_ACCEPTED, "notify-next")
    assert T.classify(P + b"start-next/update/accepted") == (topics.UPDATE_ACCEPTED, "start-next")


def test_other_things_and_unknown_topics_are_unknown():
    unknown = (
        b"$aws/things/thing-2/jobs/notify-next",
        b"$aws/things/thing-10/jobs/notify-next",  # thing-1 is a prefix of thing-10
        b"$aws/things/thing/jobs/notify-next",
        b"$aws/things/thing-1/jobs",
        b"$aws/things/thing-1/jobsx/notify",
        b"$aws/things/thing-1/shadow/update/accepted",
        b"other/topic",
        b"",
        P,
        P + b"get",  # a request, never an answer
        P + b"start-next",
        P + b"job-1/get",
        P + b"job-1/update",
        P + b"get/accepted/x",
        P + b"get/acceptedx",
        P + b"get/accepte",
        P + b"notifyx",
        P + b"notify/x",
        P + b"job-1/get/accepted/extra",
        P + b"job-1/get/",
        P + b"job-1/delete/accepted",
        P + b"$next/update/accepted",  # $next is valid for get only
        P + b"$nexd/get/accepted",
        P + b"/get/accepted",  # empty job id
        P + b"job:1/get/accepted",
        P + b"job 1/update/accepted",
        P + b"a" * 65 + b"/update/accepted",
        P + b"job-1/notify-namespace-ns/",
        P + b"job-1/get/accepte",
        P + b"job-1/get/rejectedd",
    )
    for topic in unknown:
        assert T.classify(topic) == (topics.UNKNOWN, None), topic
    assert T.classify(P + b"a" * 64 + b"/update/accepted") == (topics.UPDATE_ACCEPTED, "a" * 64)


def test_subscriptions_cover_every_answer_and_no_request():
    filters = T.subscriptions()
    assert len(filters) == 4
    answers = (b"notify-next", b"get/accepted", b"start-next/rejected", b"$next/get/accepted")
    answers += (b"j/get/rejected", b"j/update/accepted", b"get/update/rejected", b"notify/get/accepted")
    requests = (b"get", b"start-next", b"j/get", b"$next/get", b"j/update", b"notify")
    for rest in answers:
        assert any(_matches(f, P + rest) for f in filters), rest
    for rest in requests:
        assert not any(_matches(f, P + rest) for f in filters), rest
    for f in filters:
        assert f.startswith(P)


def _matches(filt, topic):
    """MQTT topic filter match (+ and #), as a broker does it."""
    fl = filt.split(b"/")
    tl = topic.split(b"/")
    for i, level in enumerate(fl):
        if level == b"#":
            return True
        if i >= len(tl) or (level != b"+" and level != tl[i]):
            return False
    return len(fl) == len(tl)


def _allocated(fn, arg, rounds=20):
    fn(arg)
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        for _ in range(rounds):
            fn(arg)
        return (gc.mem_alloc() - before) // rounds
    finally:
        gc.enable()


def test_classify_allocates_only_the_job_id():
    # the transport hands over a memoryview into its receive buffer: it is read in place
    fixed = (P + b"notify-next", P + b"start-next/accepted", P + b"$next/get/accepted")
    fixed += (b"$aws/things/other/jobs/notify-next", P + b"x" * 64 + b"/bad/accepted")
    for topic in fixed:
        for form in (topic, bytearray(topic), memoryview(bytearray(topic))):
            used = _allocated(T.classify, form)
            print("classify", type(form).__name__, topic[len(P) :], used, "bytes")
            assert used == 0, (topic, type(form), used)
    topic = P + b"job-1234/update/accepted"
    for form in (topic, bytearray(topic), memoryview(bytearray(topic))):
        assert T.classify(form) == (topics.UPDATE_ACCEPTED, "job-1234")
        used = _allocated(T.classify, form)
        print("classify with job id", type(form).__name__, used, "bytes")
        assert 0 < used <= 160, (type(form), used)  # the job id str (its slice and the str), nothing else
