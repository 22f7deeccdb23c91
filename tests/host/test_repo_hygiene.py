"""No certificate, key or third-party source is tracked by git, and no file cites a document
outside the repository."""

import re
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


# The docs, comments and messages cite only the product (and public sources): never the notes it
# was developed from, nor the words of how it was built. The strings are built by concatenation
# so that this file does not match itself.
OUTSIDE_DOCUMENTS = (
    "micropython" + "-notes",
    "aws-jobs" + "-api",
    "/work" + "/",
    "../" + "shared",
    "reference" + "'s section",
    "the " + "reference below",
)
# A numbered section (the section sign or the word, then a number) of a document the reader does
# not have; a public standard's (an RFC's, MQTT's) is fine.
SECTION = re.compile("(" + "§" + r"\s?\d|\bsections?[- ]\d)", re.IGNORECASE)
PUBLIC_STANDARD = re.compile(r"(RFC\s?\d+|MQTT\s?[\d.]+)[\s,]*$")
BUILDING_WORDS = (
    "in this " + "branch",
    "the " + "seed's",
    "seed's " + "document",
    "ops " + "branch",
    "protocol " + "branch",
    "engine " + "branch",
    "not " + "merged yet",
    "before the " + "merge)",
    "this part's " + "file",
    "not ours " + "to change",
)


def tracked_text() -> list[tuple[str, int, str]]:
    """(file, line number, line) of every tracked text file outside .ci/ (the session tooling)."""
    lines = []
    for name in tracked_files():
        path = ROOT / name
        if name.startswith(".ci/") or not path.is_file() or path.stat().st_size > 1_000_000:
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            lines.append((name, number, line))
    return lines


def outside_citations(lines) -> list[str]:
    found = []
    for name, number, line in lines:
        lowered = line.lower()
        if any(cite.lower() in lowered for cite in OUTSIDE_DOCUMENTS):
            found.append(f"{name}:{number}: {line.strip()}")
            continue
        for match in SECTION.finditer(line):
            if not PUBLIC_STANDARD.search(line[: match.start()]):
                found.append(f"{name}:{number}: {line.strip()}")
                break
    return found


def building_words(lines) -> list[str]:
    return [
        f"{name}:{number}: {line.strip()}"
        for name, number, line in lines
        if any(words in line.lower() for words in BUILDING_WORDS)
    ]


def test_no_file_cites_a_document_outside_the_repository():
    assert outside_citations(tracked_text()) == []


def test_no_file_speaks_of_how_it_was_built():
    assert building_words(tracked_text()) == []


def test_the_checks_find_what_they_look_for():
    samples = [
        ("a.md", 1, "as " + "aws-jobs" + "-api.md describes"),
        ("b.py", 2, "# " + "§" + "14.1: the code for a terminal update"),
        ("c.py", 3, "fast clock, section" + "-14 choices"),
        ("d.md", 4, "the spec is " + "/work" + "/shared/notes.md"),
        ("e.md", 5, "(" + "micropython" + "-notes " + "§" + "1.1)"),
    ]
    assert len(outside_citations(samples)) == 5
    assert outside_citations([("f.md", 6, "not JSON (RFC 8259 " + "§" + "6), RFC 8259 section 9")]) == []
    assert building_words([("g.md", 7, "A cheap fix is " + "in this " + "branch")]) != []
    assert building_words([("h.py", 8, "the addition's doubling branch, a merged config")]) == []
