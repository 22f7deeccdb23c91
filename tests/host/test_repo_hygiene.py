"""No certificate, key or third-party source is tracked by git."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
SECRET_SUFFIXES = (".pem", ".der", ".key", ".crt", ".p12")


def tracked_files() -> list[str]:
    result = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return result.stdout.split()


def test_no_certificate_or_key_is_tracked():
    assert [f for f in tracked_files() if f.endswith(SECRET_SUFFIXES)] == []


def test_no_private_key_text_is_tracked():
    marker = "-----BEGIN " + "PRIVATE KEY-----"
    for name in tracked_files():
        path = ROOT / name
        if path.is_file() and path.stat().st_size < 1_000_000:
            assert marker not in path.read_text(errors="ignore"), name


def test_umqtt_is_fetched_not_copied():
    assert [f for f in tracked_files() if "umqtt" in Path(f).parts] == []
