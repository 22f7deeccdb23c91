"""End to end: job text AWS's statusDetails rules would refuse, through the real stand-in.

Every document here is valid JSON AWS accepts (created through the control plane); each holds a
character outside the Basic Multilingual Plane or of Unicode category C (controls, format
characters, private use, noncharacters) in the place a device echoes it back: a parameter
diag.echo returns, the `operation` name (quoted in the REJECTED reason), a custom handler's
result, a parameter quoted in a reason. The stand-in checks every update as AWS does
(`[^\\p{C}]+`, UTF-8); each job must end in a terminal state with its own details (never the
"refused" fallback), and a normal job queued behind them must succeed within seconds. Then the
service refuses every terminal update of one job: the device retries once with a minimal
reason, gives the job up, and the queue moves on.
"""

import json
import time
import unicodedata

import pytest

from tests.host.e2e import ROOT_CUSTOM_EXAMPLE, Rig, wait_until

ROCKET = "\\ud83d\\ude80"  # U+1F680 as JSON escapes a surrogate pair
LISTED = [0x07, 0x1F, 0x7F, 0x85, 0xAD, 0x600, 0x605, 0x61C, 0x6DD, 0x70F, 0x180E, 0x200B, 0x200F,
          0x202A, 0x202E, 0x2060, 0x2064, 0x2066, 0x206F, 0xFEFF, 0xFFF9, 0xFFFB, 0xE000, 0xF8FF,
          0xFFFE, 0x1D173, 0xE0001, 0xF0000]  # fmt: skip


def _escape(cp: int) -> str:
    """The JSON escape of code point cp (a surrogate pair above the BMP)."""
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    cp -= 0x10000
    return f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}"


TEXTS = [("rocket", ROCKET)] + [(f"U+{cp:04X}", _escape(cp)) for cp in LISTED]


def _documents(tag: str, text: str) -> list[tuple[str, str, str]]:
    """(job id, document JSON, expected status) with `text` where the device echoes it."""
    safe = tag.replace("+", "")
    return [
        (f"echo-{safe}", f'{{"operation": "diag.echo", "message": "a{text}b"}}', "SUCCEEDED"),
        (f"op-{safe}", f'{{"operation": "op{text}"}}', "REJECTED"),
        (f"custom-{safe}", f'{{"operation": "customJob", "otherInfo": "x{text}y"}}', "SUCCEEDED"),
        (f"reason-{safe}", f'{{"operation": "gpio.write", "pin": "L{text}", "value": 1}}', "REJECTED"),
    ]


def _valid_for_aws(details: dict) -> bool:
    if not 0 < len(details) <= 10:
        return False
    for key, value in details.items():
        if not (0 < len(key) <= 128 and all(c.isascii() and (c.isalnum() or c in ":_-") for c in key)):
            return False
        if not (0 < len(value.encode("utf-16-le")) // 2 <= 1024):
            return False
        if any(unicodedata.category(c)[0] == "C" for c in value):
            return False
    return True


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    rig = Rig(tmp_path_factory.mktemp("e2e-unicode")).start()
    yield rig
    rig.stop()


def test_every_echoed_character_ends_its_job_with_a_valid_update_and_the_queue_moves(rig):
    dev = rig.provision("uni-1")
    (dev.root / "handlers.py").write_text(ROOT_CUSTOM_EXAMPLE.read_text())
    dev.start()
    jobs = [doc for tag, text in TEXTS for doc in _documents(tag, text)]
    for job_id, document, _ in jobs:
        dev.job(job_id, document)
    dev.job("normal-after", {"operation": "gpio.write", "pin": "LED", "value": 1})
    started = time.monotonic()
    normal = dev.result("normal-after", timeout=60)
    elapsed = time.monotonic() - started
    assert normal["status"] == "SUCCEEDED", normal
    assert elapsed < 30, elapsed  # about 4 x 30 jobs in a few seconds on this machine
    for job_id, document, expected in jobs:
        done = dev.execution(job_id)
        details = done.get("statusDetails", {}).get("detailsMap", {})
        assert done["status"] == expected, (job_id, document, done)
        assert _valid_for_aws(details), (job_id, details)
        assert not details.get("reason", "").startswith("statusDetails refused"), (job_id, details)
    echoed = dev.execution("echo-rocket")["statusDetails"]["detailsMap"]["echo"]
    assert echoed == "a\U0001f680b", echoed  # a surrogate pair is the one character it encodes
    assert "refused" not in dev.output()
    assert dev.sim.boots == 1 and dev.problems() == []


def test_a_lone_surrogate_in_a_document_is_rejected_with_the_reason(rig):
    dev = rig.device("uni-2")
    done = dev.run("lone", '{"operation": "diag.echo", "message": "a\\ud800b"}')
    assert done["status"] == "REJECTED", done
    assert done["statusDetails"]["detailsMap"]["reason"].startswith("invalid JSON (escape"), done


def test_terminal_updates_refused_twice_end_in_a_minimal_retry_then_the_queue_moves_on(rig):
    dev = rig.device("uni-refused")
    rig.aws.settings(refuse_terminal_updates=["stuck-1"])
    try:
        sniffer = rig.sniffer("$aws/things/uni-refused/jobs/stuck-1/update")
        dev.job("stuck-1", {"operation": "diag.echo", "message": "hello"})
        dev.job("behind-1", {"operation": "gpio.write", "pin": "LED", "value": 1})
        dev.job("behind-2", {"operation": "diag.echo", "message": "still moving"})
        assert dev.result("behind-2", timeout=30)["status"] == "SUCCEEDED"
        assert dev.execution("behind-1")["status"] == "SUCCEEDED"
        assert dev.execution("stuck-1")["status"] == "IN_PROGRESS"  # the service kept it
        sent = [json.loads(p) for _, p in sniffer.seen()]
        finals = [u for u in sent if u["status"] != "IN_PROGRESS"]
        assert len(finals) == 2, finals  # the update, then once with minimal details: never again
        assert finals[1]["statusDetails"] == {
            "reason": "statusDetails refused by the service: InvalidRequest"
        }
        wait_until(lambda: "given up" in dev.output(), 5, "the give-up in the device log")
        sniffer.stop()
    finally:
        rig.aws.settings(refuse_terminal_updates=[])
    # the operator ends it; the device runs what comes next as before
    rig.aws.cancel_job("stuck-1", force=True)
    assert dev.run("after-1", {"operation": "gpio.write", "pin": "LED", "value": 0})["status"] == "SUCCEEDED"
