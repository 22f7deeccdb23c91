"""The Makefile, the front door: `make help` names every target, `make setup` says what it does."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def make(*args: str) -> str:
    result = subprocess.run(["make", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def targets() -> set[str]:
    """Every target a user can name: rules and .PHONY entries that are not files under build/."""
    text = (ROOT / "Makefile").read_text()
    names = set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.MULTILINE))
    for line in re.findall(r"^\.PHONY\s*:(.*)$", text, re.MULTILINE):
        names.update(line.split())
    return names


def test_help_lists_every_target():
    found = targets()
    assert {"run", "test", "setup", "deploy", "provision", "help"} <= found, found
    shown = set(re.findall(r"^make (\S+)", make("-s", "help"), re.MULTILINE))
    assert found - {"help"} <= shown, f"not in `make help`: {sorted(found - {'help'} - shown)}"


def test_help_is_the_default_goal():
    assert make("-s") == make("-s", "help")


def test_setup_prints_a_line_for_each_step():
    """`make -n -B` shows every step's recipe without running it: each starts with an echo."""
    dry = make("-n", "-B", "setup")
    stamps = re.search(r"^SETUP_STAMPS\s*:=(.*)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert stamps, "SETUP_STAMPS not found"
    steps = re.findall(r'^echo "setup: ([^"]+)"', dry, re.MULTILINE)
    assert len(steps) >= len(stamps.group(1).split()), (steps, dry)
