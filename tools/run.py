"""`make run`: the local AWS IoT stand-in and a simulated ESP32 running demonstration jobs."""

import sys

MISSING = """\
make run: not built yet.

What exists today: the test harness (MicroPython tests inside pytest), mutual TLS from
MicroPython to a local mosquitto, and the .mpy build. Still to come before `make run` can
show a simulated ESP32 running jobs: the Jobs protocol core (lib/jobs), the local Jobs
service (tools/), the operations and boards, and the device entry point (firmware/).
"""


def main() -> int:
    print(MISSING, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
