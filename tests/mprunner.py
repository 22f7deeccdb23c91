# Runs test_* functions of one test module inside MicroPython and reports each result.
"""Usage: micropython tests/mprunner.py <module> [test_name ...]

Prints, for every test it runs:
    @@mptest start <name>
    ...whatever the test prints...
    @@mptest pass|fail|skip <name>
    ...the traceback, for a failure; the reason, for a skip...
    @@mptest end <name>
The pytest plugin in tests/conftest.py reads these lines. Exit status: number of failures.
"""

import gc
import sys
import time

import mptest


def run(module_name, names):
    module = __import__(module_name)
    if not names:
        names = sorted(n for n in dir(module) if n.startswith("test_"))
    failures = 0
    for name in names:
        fn = getattr(module, name, None)
        print("@@mptest start", name)
        gc.collect()
        t0 = time.ticks_ms()
        try:
            if fn is None:
                raise AttributeError("no test function " + name)
            fn()
        except mptest.Skip as skip:
            print("@@mptest skip", name)
            print(skip.args[0] if skip.args else "")
        except BaseException as error:  # noqa: BLE001 - a test may raise anything, even SystemExit
            failures += 1
            print("@@mptest fail", name)
            sys.print_exception(error)
        else:
            print("@@mptest pass", name, time.ticks_diff(time.ticks_ms(), t0))
        print("@@mptest end", name)
    return failures


if __name__ == "__main__":
    sys.exit(min(run(sys.argv[1], sys.argv[2:]), 100))
