# jobs.ops.system: system.reboot, config.set, diag.echo. MIT licence.
"""Device-level operations.

system.reboot: journal, IN_PROGRESS {"step": "rebooting"} via job.reboot(), reset; after the
boot, resume() reports SUCCEEDED with the reset reason.
config.set: {"values": {...}}: keys checked against the config schema before it runs
(config.check_remote: REJECTED), then jobs.config.apply_remote (written atomically).
diag.echo: {"message": "..."} echoed (bounded) with heap, uptime, reset cause and versions.
"""

import gc

from micropython import const

from jobs import ops

_PHASE_REBOOT = "reboot"
MAX_ECHO = const(256)
MAX_VALUES = const(16)


class Reboot(ops.Op):
    name = "system.reboot"
    params = ()

    def run(self, job):
        job.checkpoint(_PHASE_REBOOT, {})
        job.reboot({"step": "rebooting"})
        raise ops.Failed("reset did not happen")  # job.reboot never returns on a real board

    def resume(self, job):
        return {"step": "rebooted", "resetReason": job.board.reset_reason()}


class ConfigSet(ops.Op):
    name = "config.set"
    idempotent = True
    params = (ops.Param("values", ops.DICT, lo=1, hi=MAX_VALUES),)
    idempotent = True

    def check(self, doc, board):
        # the schema's rules (known, remotely settable, in bounds): REJECTED; what depends on
        # the running config (max_document <= buffer_size, ...) is apply_remote's: FAILED
        from jobs import config

        return config.check_remote(doc["values"])

    def run(self, job):
        from jobs import config, store

        try:
            config.apply_remote(job.config, job.doc["values"], store.join(job.board.root, "config.json"))
        except ValueError as error:
            raise ops.Failed(str(error.args[0]) if error.args else "invalid value")
        return {"applied": ",".join(sorted(job.doc["values"]))[:1024]}


class Echo(ops.Op):
    name = "diag.echo"
    idempotent = True
    params = (ops.Param("message", ops.STR, hi=MAX_ECHO, optional=True),)

    def run(self, job):
        board = job.board
        gc.collect()
        details = {
            "heapFree": str(gc.mem_free()),
            "uptime": str(board.uptime()),
            "resetReason": board.reset_reason(),
            "firmware": board.firmware_version(),
            "app": job.config.get("app_version") or "none",  # the boot read it (ota.files)
            "board": board.name,
        }
        message = job.doc.get("message")
        if message:
            details["echo"] = message  # made valid for AWS with every update (jobs.details)
        return details


OPS = (Reboot(), ConfigSet(), Echo())
