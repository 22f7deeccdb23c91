# jobs.topics: AWS IoT Jobs MQTT topic names and classification. MIT licence.
"""Build the Jobs topics of one thing and classify incoming topics.

    t = Topics(b"thing-1")
    t.start_next()                 # b"$aws/things/thing-1/jobs/start-next"
    t.classify(topic)              # (UPDATE_ACCEPTED, "job-7") or (UNKNOWN, None)

A job id may be any 1-64 of [a-zA-Z0-9_-], so jobs called `get`, `start-next`, `notify` or
`notify-next` exist: their answers have three levels after the prefix (`get/get/accepted`),
the fixed ones one or two (`get/accepted`), and classification tells them apart by that.
The topic is compared in place (bytes, bytearray or the transport's memoryview alike), so
nothing is allocated except the job id string returned.
"""

from micropython import const

UNKNOWN = const(0)
GET_ACCEPTED = const(1)
GET_REJECTED = const(2)
START_NEXT_ACCEPTED = const(3)
START_NEXT_REJECTED = const(4)
DESCRIBE_ACCEPTED = const(5)
DESCRIBE_REJECTED = const(6)
UPDATE_ACCEPTED = const(7)
UPDATE_REJECTED = const(8)
NOTIFY = const(9)
NOTIFY_NEXT = const(10)

NEXT = "$next"
# answers without a job id come from these tuples, so classifying them allocates nothing
_PLAIN = tuple((kind, None) for kind in range(NOTIFY_NEXT + 1))
_OF_NEXT = ((DESCRIBE_ACCEPTED, NEXT), (DESCRIBE_REJECTED, NEXT))
_MAX_THING = const(128)
_MAX_JOB = const(64)


def _valid(name, longest, colon):
    """True when `name` (str or bytes) is 1..longest of [a-zA-Z0-9_-] (and ':' if colon)."""
    if isinstance(name, str):
        name = name.encode()
    if not isinstance(name, (bytes, bytearray)) or not 0 < len(name) <= longest:
        return False
    for c in name:
        if not (
            97 <= c <= 122 or 65 <= c <= 90 or 48 <= c <= 57 or c == 45 or c == 95 or (colon and c == 58)
        ):
            return False
    return True


def valid_thing_name(name):
    """AWS thing name: 1-128 characters of [a-zA-Z0-9:_-]."""
    return _valid(name, _MAX_THING, True)


def valid_job_id(name):
    """AWS job id: 1-64 characters of [a-zA-Z0-9_-]."""
    return _valid(name, _MAX_JOB, False)


def _as_bytes(name):
    return name.encode() if isinstance(name, str) else bytes(name)


def _job_id_at(topic, start, end):
    """The job id topic[start:end] as str if valid, else None (no allocation when invalid)."""
    if not 0 < end - start <= _MAX_JOB:
        return None
    for i in range(start, end):
        c = topic[i]
        if not (97 <= c <= 122 or 65 <= c <= 90 or 48 <= c <= 57 or c == 45 or c == 95):
            return None
    return str(topic[start:end], "utf-8")


class Topics:
    """The Jobs topics of one thing; the common prefix is built once."""

    def __init__(self, thing_name):
        if not valid_thing_name(thing_name):
            raise ValueError("bad thing name (1-128 of a-z A-Z 0-9 : _ -): %r" % (thing_name,))
        self.thing_name = _as_bytes(thing_name)
        self.prefix = b"$aws/things/" + self.thing_name + b"/jobs/"
        # a topic starts with the prefix exactly when prefix <= topic < this ("/" + 1 is "0"):
        # two comparisons made in C on any buffer, where memoryview has no startswith()
        self._past = self.prefix[:-1] + b"0"

    def get_pending(self):
        return self.prefix + b"get"

    def start_next(self):
        return self.prefix + b"start-next"

    def describe(self, job_id):
        """DescribeJobExecution topic; `job_id` may be "$next"."""
        job_id = _as_bytes(job_id)
        if job_id != b"$next" and not valid_job_id(job_id):
            raise ValueError("bad job id: %r" % (job_id,))
        return self.prefix + job_id + b"/get"

    def update(self, job_id):
        if not valid_job_id(job_id):
            raise ValueError("bad job id: %r" % (job_id,))
        return self.prefix + _as_bytes(job_id) + b"/update"

    def subscriptions(self):
        """The topic filters the device subscribes to (QoS 1).

        `+/+/+` covers every describe and update answer (`<job>/get/...`, `$next/get/...`,
        `<job>/update/...`) and nothing the device publishes itself, so no echo of its
        own requests comes back; see docs/protocol.md.
        """
        p = self.prefix
        return (p + b"notify-next", p + b"start-next/+", p + b"get/+", p + b"+/+/+")

    def classify(self, topic):
        """(kind, job_id or None) for an incoming topic (bytes, bytearray or memoryview).

        Read from the end: an answer ends in `/accepted` or `/rejected`, and what comes before
        that tells a fixed answer (`get`, `start-next`) from a job's (`<job>/get`,
        `<job>/update`). The job id must match its pattern, so it holds no "/".
        """
        if not self.prefix <= topic < self._past:
            return _PLAIN[UNKNOWN]
        p = len(self.prefix)
        n = len(topic)
        if n - p == 11 and _at(topic, p, b"notify-next"):
            return _PLAIN[NOTIFY_NEXT]
        if n - p == 6 and _at(topic, p, b"notify"):
            return _PLAIN[NOTIFY]
        head = n - 9  # where "/accepted" or "/rejected" starts, after at least "get"
        answer = _answer(topic, head) if head - p >= 3 else -1
        if answer < 0:
            return _PLAIN[UNKNOWN]
        if head - p == 3 and _at(topic, p, b"get"):
            return _PLAIN[GET_ACCEPTED + answer]
        if head - p == 10 and _at(topic, p, b"start-next"):
            return _PLAIN[START_NEXT_ACCEPTED + answer]
        if head - p > 4 and _at(topic, head - 4, b"/get"):
            if head - 4 - p == 5 and _at(topic, p, b"$next"):
                return _OF_NEXT[answer]
            job_id = _job_id_at(topic, p, head - 4)
            if job_id is not None:
                return DESCRIBE_ACCEPTED + answer, job_id
        elif head - p > 7 and _at(topic, head - 7, b"/update"):
            job_id = _job_id_at(topic, p, head - 7)
            if job_id is not None:
                return UPDATE_ACCEPTED + answer, job_id
        return _PLAIN[UNKNOWN]


def _at(topic, i, word):
    """True when `word` is at topic[i:] (compared in place: memoryview has no startswith)."""
    if i + len(word) > len(topic):
        return False
    for c in word:
        if topic[i] != c:
            return False
        i += 1
    return True


def _answer(topic, i):
    """0 when topic[i:] is `/accepted`, 1 for `/rejected`, else -1."""
    if topic[i] == 47:
        if _at(topic, i + 1, b"accepted"):
            return 0
        if _at(topic, i + 1, b"rejected"):
            return 1
    return -1
