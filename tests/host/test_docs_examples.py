"""Examples in the docs use what the code accepts."""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def remotely_settable() -> set[str]:
    """The config keys `config.set` accepts, as lib/jobs/config.py (inside MicroPython) says."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "micropython"), "-c",
         "from jobs import config\nprint(' '.join(e[0] for e in config.SCHEMA if e[5]))"],
        env={"MICROPYPATH": f".frozen:{ROOT / 'lib'}"}, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    keys = set(result.stdout.split())
    assert keys, result.stderr
    return keys


def test_every_config_set_example_uses_a_remotely_settable_key():
    allowed = remotely_settable()
    examples = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for line in page.read_text().splitlines():
            if "not remotely settable" in line:
                continue  # an example of what config.set refuses
            for found in re.finditer(r'\{"operation": "config\.set", "values": (\{[^}]*\})\}', line):
                examples.append((page.name, json.loads(found.group(1))))
    assert examples, "no config.set example found in the docs"
    wrong = [(page, key) for page, values in examples for key in values if key not in allowed]
    assert not wrong, f"not remotely settable (lib/jobs/config.py SCHEMA): {wrong}"
