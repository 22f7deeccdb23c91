# testops: tiny operations for engine tests (real Op subclasses per the contract).
"""Registered on import: test.echo, test.idem, test.fail, test.crash, test.hook, test.reboot, test.steps."""

from jobs import ops

RUNS = {}  # op name -> times run
HOOK = [None]  # a test's function called by test.hook with the job


class Reset(BaseException):
    """What the test board's reset() raises: the process would end here."""


class Board:
    name = "test"
    root = "/tmp"

    def __init__(self):
        self.resets = []

    def reset(self, reason):
        self.resets.append(reason)
        raise Reset(reason)


def _count(name):
    RUNS[name] = RUNS.get(name, 0) + 1


class Echo(ops.Op):
    name = "test.echo"
    params = (
        ops.Param("value", ops.INT, lo=0, hi=100, optional=True),
        ops.Param("pad", ops.STR, optional=True),
    )

    def run(self, job):
        _count(self.name)
        return {"echo": str(job.doc.get("value"))}


class Idem(ops.Op):
    name = "test.idem"
    idempotent = True
    params = (ops.Param("value", ops.INT, lo=0, hi=100, optional=True),)

    def run(self, job):
        _count(self.name)
        return {"idem": str(job.doc.get("value"))}


class Fail(ops.Op):
    name = "test.fail"

    def run(self, job):
        _count(self.name)
        raise ops.Failed("no luck")


class Crash(ops.Op):
    name = "test.crash"

    def run(self, job):
        _count(self.name)
        return {"x": str(1 // 0)}


class Hook(ops.Op):
    name = "test.hook"

    def run(self, job):
        _count(self.name)
        return HOOK[0](job)


class Reboot(ops.Op):
    name = "test.reboot"

    def run(self, job):
        _count(self.name)
        job.checkpoint("rebooting", {"at": 1})
        job.reboot({"step": "rebooting"})
        raise AssertionError("reboot returned")

    def resume(self, job):
        _count("test.reboot.resume")
        return {"rebooted": "yes", "at": str(job.data.get("at"))}


class Steps(ops.Op):
    name = "test.steps"
    params = (ops.Param("n", ops.INT, lo=1, hi=1000),)

    def run(self, job):
        _count(self.name)
        for i in range(job.doc["n"]):
            if not job.progress({"step": str(i)}):
                raise ops.Canceled()
        return {"steps": str(job.doc["n"])}


for _op in (Echo(), Idem(), Fail(), Crash(), Hook(), Reboot(), Steps()):
    ops.register(_op)
