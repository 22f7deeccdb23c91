# micropython: timeout=120
# The engine on the in-process fake Jobs service: happy path, bad documents, handler failures,
# duplicates, cancellation, VersionMismatch, retries, reset recovery from each journal state.
import enginerig as R
from enginerig import HOOK, RUNS, Reset, Rig
from jobs import job as J
from jobs import ops


class _Progress:
    """Wraps Job.progress for one test: fn(job, details, must, original) -> bool."""

    def __init__(self, fn):
        self.fn = fn
        self.orig = J.Job.progress

    def __enter__(self):
        fn, orig = self.fn, self.orig

        def progress(job, details=None, must=False):
            return fn(job, details, must, orig)

        J.Job.progress = progress
        return self

    def __exit__(self, *exc):
        J.Job.progress = self.orig
        return False


def test_happy_path_claims_runs_and_reports_succeeded():
    rig = Rig()
    rig.create("job-1", {"operation": "test.echo", "value": 7})
    rig.until(lambda: rig.service.status("job-1") == "SUCCEEDED")
    assert rig.service.find("job-1")["details"] == {"echo": "7"}
    assert rig.engine.jobs_ok == 1
    assert rig.journal.read() is None


def test_jobs_queued_before_boot_run_in_order():
    rig = Rig()
    for i in range(3):
        rig.service.create("q-" + str(i), {"operation": "test.echo", "value": i})
    rig.until(lambda: rig.engine.jobs_ok == 3)
    assert [u[0] for u in rig.service.updates] == ["q-0", "q-1", "q-2"]


def test_unknown_operation_is_rejected_with_a_reason():
    rig = Rig()
    rig.create("bad-op", {"operation": "nope"})
    rig.until(lambda: rig.service.status("bad-op") == "REJECTED")
    assert "unsupported operation nope" in rig.service.find("bad-op")["details"]["reason"]


def test_bad_parameter_is_rejected_never_run():
    rig = Rig()
    before = RUNS.get("test.echo", 0)
    rig.create("bad-param", {"operation": "test.echo", "value": 1000})
    rig.until(lambda: rig.service.status("bad-param") == "REJECTED")
    assert rig.service.find("bad-param")["details"]["reason"].startswith("value:")
    assert RUNS.get("test.echo", 0) == before


def test_document_not_an_object_is_rejected():
    rig = Rig()
    rig.create("list-doc", [1, 2])
    rig.until(lambda: rig.service.status("list-doc") == "REJECTED")
    assert "not a JSON object" in rig.service.find("list-doc")["details"]["reason"]


def test_document_over_max_document_is_rejected_with_the_size():
    rig = Rig(max_document=1024, buffer_size=4096)
    rig.create("big", {"operation": "test.echo", "pad": "x" * 2000})
    rig.until(lambda: rig.service.status("big") == "REJECTED")
    reason = rig.service.find("big")["details"]["reason"]
    assert reason.startswith("document too large (") and reason.endswith(" > 1024)"), reason


def test_message_larger_than_the_buffer_is_streamed_and_rejected_with_the_size():
    rig = Rig(max_document=1024, buffer_size=2048)
    rig.create("huge", {"operation": "test.echo", "pad": "x" * 20000})
    rig.until(lambda: rig.service.status("huge") == "REJECTED")
    reason = rig.service.find("huge")["details"]["reason"]
    assert reason.startswith("document too large (2") and reason.endswith(" > 1024)"), reason
    rig.create("after", {"operation": "test.echo", "value": 1})
    rig.until(lambda: rig.service.status("after") == "SUCCEEDED")


def test_handler_failure_and_crash_fail_the_job_not_the_loop():
    rig = Rig()
    rig.create("f", {"operation": "test.fail"})
    rig.create("c", {"operation": "test.crash"})
    rig.create("ok", {"operation": "test.echo", "value": 1})
    rig.until(lambda: rig.service.status("ok") == "SUCCEEDED")
    assert rig.service.find("f")["details"] == {"reason": "no luck"}
    assert "ZeroDivisionError" in rig.service.find("c")["details"]["reason"]
    assert rig.engine.jobs_failed == 2 and rig.engine.jobs_ok == 1


def test_duplicate_deliveries_of_the_running_execution_are_suppressed():
    rig = Rig()
    seen = []

    def hook(job):
        svc = rig.service
        e = svc.find(job.id)
        # the same execution again: notify-next twice, and a start-next answer nobody awaits
        rig.link.push([svc.notify_next(e), svc.notify_next(e)])
        stale = {"clientToken": "abcd1234-999", "timestamp": 1, "execution": svc.execution(e)}
        rig.link.push([(svc.prefix + "start-next/accepted", stale)])
        seen.append(job.progress({"p": "1"}))
        seen.append(job.progress({"p": "2"}))
        return {"done": "1"}

    HOOK[0] = hook
    before = RUNS.get("test.hook", 0)
    rig.create("dup", {"operation": "test.hook"})
    rig.until(lambda: rig.service.status("dup") == "SUCCEEDED")
    # a late notify-next for the finished execution, once idle, does not start anything
    rig.settle(5)
    rig.link.push([rig.service.notify_next(rig.service.find("dup"))])
    rig.settle(10)
    assert RUNS["test.hook"] == before + 1
    assert seen == [True, True]
    assert rig.client.ignored >= 1
    assert rig.engine.duplicates >= 1


def test_cancel_seen_in_notify_next_stops_the_handler_and_reports_nothing_more():
    rig = Rig()
    rig.create("long", {"operation": "test.steps", "n": 50})
    rig.create("next", {"operation": "test.echo", "value": 2})
    count = [0]

    def progress(job, details, must, orig):
        if count[0] == 3:
            rig.link.push(rig.service.cancel("long"))
        count[0] += 1
        return orig(job, details, must)

    with _Progress(progress):
        rig.until(lambda: rig.service.status("next") == "SUCCEEDED")
    updates = rig.updates("long")
    assert all(u[1] == "IN_PROGRESS" for u in updates), updates
    assert len(updates) == 3, updates
    assert rig.service.status("long") == "CANCELED"
    assert rig.engine.canceled == 1


def test_update_rejected_as_terminal_cancels_the_running_job():
    rig = Rig()
    rig.create("gone", {"operation": "test.steps", "n": 20})
    calls = [0]

    def progress(job, details, must, orig):
        calls[0] += 1
        if calls[0] == 2:
            rig.service.cancel("gone")  # no notification delivered: only the update tells
        return orig(job, details, must)

    with _Progress(progress):
        rig.until(lambda: rig.engine.canceled == 1)
    assert calls[0] == 2
    assert [u[1] for u in rig.updates("gone")] == ["IN_PROGRESS"]


def test_version_mismatch_is_reconciled_by_describe():
    rig = Rig()

    def bump(job):
        rig.service.find(job.id)["version"] += 1  # someone else changed the execution
        return {"ok": "1"}

    HOOK[0] = bump
    rig.create("vm", {"operation": "test.hook"})
    rig.until(lambda: rig.service.status("vm") == "SUCCEEDED")
    assert rig.service.find("vm")["details"] == {"ok": "1"}


def test_throttled_update_is_retried_with_fresh_tokens():
    rig = Rig()
    rig.service.faults["update"] = ["RequestThrottled", "InternalError"]
    rig.create("thr", {"operation": "test.echo", "value": 3})
    rig.until(lambda: rig.service.status("thr") == "SUCCEEDED")
    assert rig.service.faults["update"] == []


def test_update_throttled_past_the_retries_is_kept_and_sent_later():
    rig = Rig(retries=1)
    rig.service.faults["update"] = ["RequestThrottled"] * 2
    rig.create("later", {"operation": "test.echo", "value": 3})
    rig.until(lambda: rig.journal.read() is not None and rig.journal.read()["phase"] == "done")
    rig.until(lambda: rig.service.status("later") == "SUCCEEDED", steps=2000)
    assert rig.journal.read() is None


def test_link_lost_while_claiming_reconnects_and_asks_again():
    rig = Rig()
    rig.engine.step()  # connected, nothing pending
    rig.link.fail_publish = 1
    rig.create("relink", {"operation": "test.echo", "value": 4})
    rig.until(lambda: rig.service.status("relink") == "SUCCEEDED")
    assert rig.link.connects == 2


def _claimed(rig, job_id, doc, phase, **extra):
    rig.service.create(job_id, doc)
    rig.service.answer(rig.service.prefix + "start-next", '{"clientToken":"old-1"}')
    entry = {"job_id": job_id, "execution_number": 1, "phase": phase}
    entry.update(extra)
    rig.journal.write(entry)


def test_reset_in_claimed_runs_the_handler_once():
    rig = Rig()
    before = RUNS.get("test.echo", 0)
    _claimed(rig, "rc", {"operation": "test.echo", "value": 5}, "claimed")
    rig.until(lambda: rig.service.status("rc") == "SUCCEEDED")
    assert RUNS["test.echo"] == before + 1


def test_reset_while_running_fails_without_rerun():
    rig = Rig()
    before = RUNS.get("test.echo", 0)
    _claimed(rig, "rr", {"operation": "test.echo", "value": 5}, "running", op="test.echo")
    rig.until(lambda: rig.service.status("rr") == "FAILED")
    assert rig.service.find("rr")["details"] == {"reason": R.E.INTERRUPTED}
    assert RUNS.get("test.echo", 0) == before


def _reset_in_test_reboot(job_id):
    """A rig whose test.reboot job `job_id` has journaled and reset the board."""
    rig = Rig()
    rig.create(job_id, {"operation": "test.reboot"})
    try:
        rig.until(lambda: False, steps=50)
    except Reset:
        pass
    return rig


def test_reset_in_an_op_phase_resumes_the_op():
    rig = _reset_in_test_reboot("boot")
    assert rig.journal.read()["phase"] == "rebooting"
    assert [u[1] for u in rig.updates("boot")] == ["IN_PROGRESS"]
    # a new boot: same journal file, same service
    rig2 = Rig(service=rig.service, fresh_journal=False)
    rig2.until(lambda: rig.service.status("boot") == "SUCCEEDED")
    assert rig.service.find("boot")["details"] == {"rebooted": "yes", "at": "1"}
    assert RUNS["test.reboot"] == 1 and RUNS["test.reboot.resume"] == 1


def test_reset_in_done_sends_the_stored_final_update():
    rig = Rig()
    before = RUNS.get("test.echo", 0)
    _claimed(rig, "rd", {"operation": "test.echo"}, "done", status="SUCCEEDED", details={"kept": "yes"})
    rig.until(lambda: rig.service.status("rd") == "SUCCEEDED")
    assert rig.service.find("rd")["details"] == {"kept": "yes"}
    assert RUNS.get("test.echo", 0) == before


def test_journaled_execution_canceled_meanwhile_is_dropped():
    rig = Rig()
    _claimed(rig, "rx", {"operation": "test.echo"}, "running", op="test.echo")
    rig.service.cancel("rx")
    rig.settle(5)
    assert rig.journal.read() is None
    assert rig.updates("rx") == []


def test_rejected_start_next_pauses_instead_of_looping():
    rig = Rig(retries=1)
    rig.service.faults["start-next"] = ["InvalidRequest"]
    rig.create("p", {"operation": "test.echo"})
    rig.settle(5)
    assert rig.service.requests <= 3
    rig.until(lambda: rig.service.status("p") == "SUCCEEDED", steps=3000)


def test_notifications_before_answers_change_nothing():
    rig = Rig()
    rig.service.notify_first = True
    for i in range(4):
        rig.service.create("o-" + str(i), {"operation": "test.steps", "n": 2})
    rig.until(lambda: rig.engine.jobs_ok == 4)
    assert [u[0] for u in rig.service.updates if u[1] != "IN_PROGRESS"] == ["o-0", "o-1", "o-2", "o-3"]
    assert rig.engine.canceled == 0


def test_query_next_first_peeks_before_claiming():
    rig = Rig(query_next_first=True)
    rig.settle(3)
    assert rig.service.requests == 1  # only the $next describe: nothing to claim
    rig.create("peek", {"operation": "test.echo", "value": 3})
    rig.until(lambda: rig.service.status("peek") == "SUCCEEDED")


def test_the_loop_and_progress_feed_the_watchdog():
    rig = Rig()

    class Dog:
        fed = 0

        def feed(self):
            Dog.fed += 1

    rig.engine.wdt = Dog()
    rig.settle(3)
    assert Dog.fed >= 3
    fed = Dog.fed
    rig.create("wd", {"operation": "test.steps", "n": 5})
    rig.until(lambda: rig.service.status("wd") == "SUCCEEDED")
    assert Dog.fed >= fed + 5


def test_ops_is_the_contracts():
    assert ops.find("test.echo").name == "test.echo"


def test_progress_must_is_true_only_when_the_update_is_accepted():
    rig = Rig(progress_interval_ms=60000)
    seen = []
    answer = rig.service.answer

    def unanswered_updates(topic, payload):
        return [] if topic.endswith("/update") else answer(topic, payload)

    def hook(job):
        seen.append(("first", job.progress({"p": "1"})))  # sent (nothing sent before)
        seen.append(("limited", job.progress({"p": "2"})))  # rate-limited: True, nothing sent
        sent = len(rig.updates(job.id))
        seen.append(("must", job.progress({"p": "3"}, must=True)))
        seen.append(("sent", len(rig.updates(job.id)) - sent))
        rig.service.find(job.id)["version"] += 1  # reconciled by describe, then accepted
        seen.append(("mismatch", job.progress({"p": "4"}, must=True)))
        rig.service.answer = unanswered_updates
        seen.append(("unanswered", job.progress({"p": "5"}, must=True)))
        seen.append(("unanswered limited", job.progress({"p": "6"})))
        rig.service.answer = answer
        rig.service.cancel(job.id)  # no notification: only the rejected update tells
        seen.append(("canceled", job.progress({"p": "7"}, must=True)))
        return {}

    HOOK[0] = hook
    rig.create("must", {"operation": "test.hook"})
    rig.until(lambda: len(seen) == 8)
    rig.settle(5)
    assert seen == [
        ("first", True),
        ("limited", True),
        ("must", True),
        ("sent", 1),
        ("mismatch", True),
        ("unanswered", False),
        ("unanswered limited", True),
        ("canceled", False),
    ], seen
    assert rig.service.status("must") == "CANCELED"
    assert rig.engine.canceled == 1


def test_describe_throttled_after_a_reset_keeps_the_journal_and_tries_again():
    rig = _reset_in_test_reboot("boot2")
    rig.service.faults["describe"] = ["InternalError"] * 5 + ["RequestThrottled"]  # past the retries
    rig2 = Rig(service=rig.service, fresh_journal=False)
    rig2.until(lambda: rig.service.status("boot2") == "SUCCEEDED")
    assert rig.service.faults["describe"] == []  # every refusal was seen; none dropped the job
    assert any("refused (InternalError)" in line for line in rig2.logs), rig2.logs


class _Writes:
    """Counts journal writes and clears of one rig."""

    def __init__(self, rig):
        self.writes = []
        self.clears = 0
        write, clear = rig.journal.write, rig.journal.clear

        def counted_write(entry):
            self.writes.append(entry["phase"])
            write(entry)

        def counted_clear():
            self.clears += 1
            clear()

        rig.journal.write = counted_write
        rig.journal.clear = counted_clear


def test_an_idempotent_operation_is_never_journaled():
    rig = Rig()
    writes = _Writes(rig)
    rig.create("idem", {"operation": "test.idem", "value": 3})
    rig.until(lambda: rig.service.status("idem") == "SUCCEEDED")
    assert writes.writes == [] and writes.clears == 0, (writes.writes, writes.clears)


def test_an_operation_with_effects_is_journaled_running_then_done():
    rig = Rig()
    writes = _Writes(rig)
    rig.create("eff", {"operation": "test.echo", "value": 3})
    rig.until(lambda: rig.service.status("eff") == "SUCCEEDED")
    assert writes.writes == ["running", "done"] and writes.clears == 1, (writes.writes, writes.clears)


def test_rejected_documents_are_never_journaled():
    rig = Rig()
    writes = _Writes(rig)
    rig.create("nope", {"operation": "nope"})
    rig.until(lambda: rig.service.status("nope") == "REJECTED")
    assert writes.writes == [] and writes.clears == 0


def test_idempotent_final_update_lost_to_a_link_loss_is_sent_after_the_reconnect():
    rig = Rig()
    before = RUNS.get("test.idem", 0)
    rig.engine.step()
    answer = rig.service.answer
    dropped = [0]

    def lose_first_final(topic, payload):
        if topic.endswith("/update") and not dropped[0]:
            dropped[0] = 1
            rig.link.connected = False  # the update went out; the link died before the answer
            answer(topic, payload)
            return []
        return answer(topic, payload)

    rig.service.answer = lose_first_final
    rig.create("lost", {"operation": "test.idem", "value": 1})
    rig.until(lambda: rig.service.status("lost") == "SUCCEEDED" and rig.engine.pending is None)
    assert RUNS["test.idem"] == before + 1, (RUNS, before)  # not run again: the kept update was resent
    assert rig.engine.jobs_ok == 1


def test_refused_final_details_are_replaced_by_a_minimal_reason():
    rig = Rig()
    rig.service.faults["update"] = ["InvalidRequest"]
    rig.create("refused", {"operation": "test.echo", "value": 3})
    rig.until(lambda: rig.service.status("refused") == "SUCCEEDED")
    assert rig.service.find("refused")["details"] == {
        "reason": "statusDetails refused by the service: InvalidRequest"
    }
    assert rig.engine.jobs_ok == 1 and rig.engine.given_up == 0


def test_final_update_refused_twice_is_given_up_and_the_queue_moves_on():
    rig = Rig()
    rig.service.faults["update"] = ["InvalidRequest", "InvalidJson"]
    rig.service.create("stuck", {"operation": "test.echo", "value": 1})
    rig.service.create("behind-1", {"operation": "test.echo", "value": 2})
    rig.service.create("behind-2", {"operation": "test.idem", "value": 3})
    rig.until(lambda: rig.service.status("behind-2") == "SUCCEEDED")
    assert rig.service.status("stuck") == "IN_PROGRESS"  # the service kept it; the device moved on
    assert rig.service.status("behind-1") == "SUCCEEDED"
    assert rig.engine.given_up == 1 and rig.engine.stats()["given_up"] == 1
    sent = [u for u in rig.service.updates if u[0] == "stuck"]
    assert sent == [], sent  # both refused: nothing accepted, nothing resent identically
    assert any("given up" in line for line in rig.logs), rig.logs
    # once the operator ends it, the device forgets it
    rig.service.cancel("stuck")
    rig.create("after", {"operation": "test.idem", "value": 4})
    rig.until(lambda: rig.service.status("after") == "SUCCEEDED")
    rig.settle(5)
    assert rig.engine.skip == [], rig.engine.skip


def test_refused_progress_never_blocks_the_job():
    rig = Rig()
    rig.service.faults["update"] = ["InvalidRequest", "InvalidRequest"]  # the first progress, twice
    rig.create("prog", {"operation": "test.steps", "n": 3})
    rig.until(lambda: rig.service.status("prog") == "SUCCEEDED")
    assert rig.service.find("prog")["details"] == {"steps": "3"}


def test_one_console_line_per_job_with_outcome_and_duration():
    rig = Rig()
    rig.create("ok-1", {"operation": "test.idem", "value": 1})
    rig.create("bad-1", {"operation": "nope"})
    rig.create("f-1", {"operation": "test.fail"})
    rig.until(lambda: rig.service.status("f-1") == "FAILED")
    lines = [line for line in rig.logs if line.startswith("job ")]
    assert len(lines) == 3, lines
    assert lines[0].startswith("job ok-1 test.idem SUCCEEDED ") and lines[0].endswith(" ms"), lines
    assert lines[1].startswith("job bad-1 nope REJECTED ") and lines[1].endswith(
        ": unsupported operation nope"
    )
    assert lines[2].startswith("job f-1 test.fail FAILED ") and lines[2].endswith(" ms: no luck"), lines


def test_a_notify_next_that_overtakes_an_empty_start_next_answer_is_not_lost():
    # AWS does not keep the order of its messages: a job queued just after start-next was
    # answered "nothing" may have its notify-next arrive first, while the engine claims (then
    # notify-next is not scanned: start-next answers it); the engine must still ask again
    rig = Rig()
    rig.settle(3)
    answer = rig.service.answer

    def notify_overtakes(topic, payload):
        out = answer(topic, payload)
        if topic.endswith("start-next") and not rig.service.find("late"):
            return rig.service.create("late", {"operation": "test.idem", "value": 1}) + out
        return out

    rig.service.answer = notify_overtakes
    rig.engine.want_next = True
    rig.until(lambda: rig.service.status("late") == "SUCCEEDED")
    assert rig.engine.jobs_ok == 1


def test_a_late_notify_next_naming_no_head_does_not_cancel_the_running_job():
    # MQTT across AWS keeps no order: the "nothing pending" notify-next of the job before may
    # arrive while this one runs; the service, asked, says it is running: it goes on
    rig = Rig()
    rig.create("first", {"operation": "test.idem", "value": 1})
    rig.until(lambda: rig.service.status("first") == "SUCCEEDED")

    def late_notice(job):
        rig.link.push([rig.service.notify_next(None)])
        for i in range(3):
            if not job.progress({"step": str(i)}):
                raise ops.Canceled()
        return {"ran": "all"}

    HOOK[0] = late_notice
    rig.create("second", {"operation": "test.hook"})
    rig.until(lambda: rig.service.status("second") == "SUCCEEDED")
    assert rig.service.find("second")["details"] == {"ran": "all"}
    assert rig.engine.canceled == 0
