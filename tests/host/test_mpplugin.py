"""The pytest plugin that runs tests/device files inside MicroPython (tests/conftest.py)."""

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
TESTS = Path(__file__).resolve().parent.parent

DEMO = """\
def test_passes():
    assert 1 + 1 == 2


def test_fails():
    values = [1, 2]
    assert values[0] == 2, "first value is " + str(values[0])


def test_prints_then_passes():
    print("hello from micropython")
"""


@pytest.fixture
def project(pytester):
    """A copy of the plugin and runner in a scratch project, with one device test file."""
    shutil.copy(TESTS / "conftest.py", pytester.path / "conftest.py")
    (pytester.path / "tests").mkdir()
    shutil.copy(TESTS / "mprunner.py", pytester.path / "tests" / "mprunner.py")
    device = pytester.path / "tests" / "device"
    device.mkdir()
    shutil.copy(TESTS / "device" / "mptest.py", device / "mptest.py")
    (pytester.path / "tools").mkdir()
    (pytester.path / "tools" / "__init__.py").touch()
    shutil.copy(TESTS.parent / "tools" / "mpenv.py", pytester.path / "tools" / "mpenv.py")
    (device / "test_demo.py").write_text(DEMO)
    # the copied conftest finds tests/ beside itself
    conftest = pytester.path / "conftest.py"
    conftest.write_text(conftest.read_text().replace("parent.parent\n", "parent\n", 1))
    return pytester


def test_a_failing_micropython_test_fails_the_run_with_its_traceback(project):
    result = project.runpytest_subprocess("-v", "tests")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_demo.py::test_fails*FAILED*",
            "*MicroPython traceback*",
            "*test_demo.py*line 7, in test_fails*",
            "AssertionError: first value is 1",
        ]
    )
    assert result.ret == 1


def test_k_selects_and_x_stops(project):
    selected = project.runpytest_subprocess("-v", "-k", "passes", "tests")
    selected.assert_outcomes(passed=2)
    stopped = project.runpytest_subprocess("-x", "-k", "fails or prints", "tests")
    stopped.assert_outcomes(failed=1)


def test_heapsize_directive_limits_the_micropython_heap(project):
    (project.path / "tests" / "device" / "test_heap.py").write_text(
        "# micropython: heapsize=16K\n"
        "def test_big_allocation():\n"
        "    bytearray(64 * 1024)\n"
        "def test_small_allocation():\n"
        "    bytearray(1024)\n"
    )
    result = project.runpytest_subprocess("-v", "tests/device/test_heap.py")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*MemoryError*"])


def test_a_crashed_process_fails_each_test_with_its_output(project):
    (project.path / "tests" / "device" / "test_crash.py").write_text(
        "import no_such_module\ndef test_one():\n    pass\ndef test_two():\n    pass\n"
    )
    result = project.runpytest_subprocess("-v", "tests/device/test_crash.py")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        ["*did not report a result*", "*no module named 'no_such_module'*", "*exit status 1*"]
    )
