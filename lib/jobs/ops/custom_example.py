# jobs.ops.custom_example: how to add your own operation. MIT licence.
"""A user handler for the document {"operation": "customJob", "otherInfo": "someValue"}.

Copy this into handlers.py at the device root (the firmware imports it at boot, if present) and
edit it. Declare every top-level key as a Param: a document with other keys, missing keys or
values of the wrong kind is REJECTED with a reason before run() is called. run() returns the
statusDetails of SUCCEEDED (string values) or raises ops.Failed("reason").
"""

from jobs import ops


class CustomJob(ops.Op):
    name = "customJob"
    params = (ops.Param("otherInfo", ops.STR, lo=1, hi=256),)

    def run(self, job):
        # job.doc, job.board, job.config, job.progress(details), job.checkpoint(phase, data)
        return {"otherInfo": job.doc["otherInfo"], "handledBy": self.name}


ops.register(CustomJob())
