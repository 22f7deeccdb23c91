"""The pytest plugin that runs tests/device files inside MicroPython (tests/conftest.py)."""

import shutil
from pathlib import Path

import pytest

from tools import mpenv

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
def project(pytester, monkeypatch):
    """A copy of the plugin and runners in a scratch project, with one device test file; the
    32-bit runtime is the one `make setup` installed."""
    shutil.copy(TESTS / "conftest.py", pytester.path / "conftest.py")
    (pytester.path / "tests").mkdir()
    shutil.copy(TESTS / "mprunner.py", pytester.path / "tests" / "mprunner.py")
    device = pytester.path / "tests" / "device"
    device.mkdir()
    shutil.copy(TESTS / "device" / "mptest.py", device / "mptest.py")
    (pytester.path / "tools").mkdir()
    (pytester.path / "tools" / "__init__.py").touch()
    shutil.copy(TESTS.parent / "tools" / "mpenv.py", pytester.path / "tools" / "mpenv.py")
    shutil.copytree(TESTS.parent / "tools" / "wasm", pytester.path / "tools" / "wasm")
    monkeypatch.setenv("WASM_MICROPYTHON", str(mpenv.WASM_MODULE / "micropython.mjs"))
    (device / "test_demo.py").write_text(DEMO)
    # the copied conftest finds tests/ beside itself
    conftest = pytester.path / "conftest.py"
    conftest.write_text(conftest.read_text().replace("parent.parent\n", "parent\n", 1))
    return pytester


def test_a_failing_micropython_test_fails_the_run_with_its_traceback(project):
    result = project.runpytest_subprocess("-v", "tests")
    result.assert_outcomes(passed=4, failed=2)  # each test on the Unix port and on wasm32
    result.stdout.fnmatch_lines(
        [
            "*test_demo.py::test_fails FAILED*",
            "*test_demo.py::test_fails?wasm32? FAILED*",
            "*MicroPython traceback*",
            "*test_demo.py*line 7, in test_fails*",
            "AssertionError: first value is 1",
        ]
    )
    assert result.ret == 1


def test_k_selects_and_x_stops(project):
    selected = project.runpytest_subprocess("-v", "-k", "passes", "tests")
    selected.assert_outcomes(passed=4)
    unix_only = project.runpytest_subprocess("-v", "-k", "passes and not wasm32", "tests")
    unix_only.assert_outcomes(passed=2)
    stopped = project.runpytest_subprocess("-x", "-k", "fails or prints", "tests")
    stopped.assert_outcomes(failed=1)


def test_heapsize_directive_limits_the_micropython_heap(project):
    (project.path / "tests" / "device" / "test_heap.py").write_text(
        "# micropython: heapsize=16K\n"
        "# micropython: wasm32=skip its heap grows past heapsize\n"
        "def test_big_allocation():\n"
        "    bytearray(64 * 1024)\n"
        "def test_small_allocation():\n"
        "    bytearray(1024)\n"
    )
    result = project.runpytest_subprocess("-v", "-rs", "tests/device/test_heap.py")
    result.assert_outcomes(passed=1, failed=1, skipped=2)
    result.stdout.fnmatch_lines(["*MemoryError*", "*SKIPPED*wasm32: its heap grows past heapsize*"])


def test_a_crashed_process_fails_each_test_with_its_output(project):
    (project.path / "tests" / "device" / "test_crash.py").write_text(
        "import no_such_module\ndef test_one():\n    pass\ndef test_two():\n    pass\n"
    )
    result = project.runpytest_subprocess("-v", "tests/device/test_crash.py")
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines(
        ["*did not report a result*", "*no module named 'no_such_module'*", "*exit status 1*"]
    )


def test_wasm32_items_run_on_a_32_bit_micropython(project):
    # ESP32-sized numbers: a 2^30 ms tick period and 31-bit small ints, where the Unix port has 2^62
    (project.path / "tests" / "device" / "test_bits.py").write_text(
        "import sys, time\n"
        "def test_ticks_wrap_at_2_30():\n"
        "    assert time.ticks_add(0, -1) == (1 << 30) - 1, time.ticks_add(0, -1)\n"
        "def test_word_is_32_bits():\n"
        "    assert sys.maxsize == (1 << 31) - 1, sys.maxsize\n"
    )
    result = project.runpytest_subprocess("-v", "tests/device/test_bits.py")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines_random(
        [
            "*test_bits.py::test_ticks_wrap_at_2_30 FAILED*",
            "*test_bits.py::test_ticks_wrap_at_2_30?wasm32? PASSED*",
            "*test_bits.py::test_word_is_32_bits FAILED*",
            "*test_bits.py::test_word_is_32_bits?wasm32? PASSED*",
        ]
    )


def test_what_cannot_run_on_wasm32_is_skipped_with_its_reason(project):
    device = project.path / "tests" / "device"
    (device / "test_net.py").write_text("# micropython: needs=broker\ndef test_talks():\n    pass\n")
    (device / "test_told.py").write_text(
        "# micropython: wasm32=skip it counts on a MemoryError\ndef test_big():\n    pass\n"
    )
    (device / "test_inner.py").write_text(
        "import sys\nfrom mptest import skip\n"
        "def test_on_unix_only():\n"
        "    if sys.platform == 'webassembly':\n"
        "        skip('not here')\n"
    )
    # only the wasm32 items: nothing starts a broker
    result = project.runpytest_subprocess("-v", "-rs", "-k", "wasm32 and not demo", "tests/device")
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines_random(
        [
            "*SKIPPED*wasm32: needs broker: the wasm32 runtime has no sockets*",
            "*SKIPPED*wasm32: it counts on a MemoryError*",
            "*SKIPPED*wasm32: not here*",
        ]
    )
    (device / "test_bad.py").write_text("# micropython: wasm32=maybe\ndef test_x():\n    pass\n")
    bad = project.runpytest_subprocess("tests/device/test_bad.py")
    assert bad.ret != 0
    bad.stdout.fnmatch_lines(["test_bad.py: '# micropython: wasm32=skip <reason>' expected"])


def test_a_missing_wasm32_runtime_fails_its_items_and_says_how_to_get_it(project, monkeypatch):
    monkeypatch.setenv("WASM_MICROPYTHON", str(project.path / "nowhere" / "micropython.mjs"))
    result = project.runpytest_subprocess("-k", "test_passes", "tests")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*the wasm32 MicroPython (Node.js + build/wasm) is missing: run `make setup`*"]
    )
