# bench/mp_journal.py: journal writes per job, by operation, inside MicroPython. MIT licence.
"""Usage (MICROPYPATH with lib, boards/unix and tests/device):
    micropython bench/mp_journal.py 50
Runs 50 jobs of each operation on the engine test rig (tests/device/enginerig.py, the in-process
fake service) with the unix board, and prints `@@bench journal_<op> <writes per job>` lines.
The journal is the only flash write the engine makes for a job (docs/engine.md, "What is
journaled, and why"); the unix board's own pin file is the simulated hardware, not counted.
"""

import os
import sys

import enginerig
from jobs import store

OPS = (
    ("gpio.write", {"operation": "gpio.write", "pin": "LED", "value": 1}),
    ("diag.echo", {"operation": "diag.echo", "message": "hi"}),
    ("gpio.pulse", {"operation": "gpio.pulse", "pin": "LED", "value": 1, "ms": 1}),
)


def writes_per_job(name, doc, count):
    import board

    root = "/tmp/bench-journal-" + str(os.urandom(4).hex())
    store.makedirs(root)
    enginerig.Board = lambda: board.Board({"board_state_dir": root})
    rig = enginerig.Rig()
    rig.logs = None
    rig.client.log = rig.engine.log = lambda *a: None
    counted = [0]
    write = rig.journal.write

    def counting(entry):
        counted[0] += 1
        write(entry)

    rig.journal.write = counting
    for i in range(count):
        rig.create(name.replace(".", "-") + "-" + str(i), doc)
    rig.until(lambda: rig.engine.jobs_ok == count, steps=count * 10)
    store.rmtree(root)
    return counted[0] / count


def main(count):
    for name, doc in OPS:
        print("@@bench journal_" + name, writes_per_job(name, doc, count))


main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
