"""Fetch the pinned MicroPython dependencies from the package registry into build/deps.

The registry's only umqtt.simple release is 1.3.4 (2017): an sdist pip cannot install
(no setup.py). We fetch it through pip's configured index, check its SHA-256 against the
pin below, and extract the module. Nothing fetched here is committed.
"""

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile
import urllib.request
from pathlib import Path

PINS = {
    # project name on the registry: (file name, sha256, member prefix inside the archive)
    "micropython-umqtt-simple": (
        "micropython-umqtt.simple-1.3.4.tar.gz",
        "b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f",
        "micropython-umqtt.simple-1.3.4/umqtt/",
    ),
}


def index_url() -> str:
    """The simple index pip would use: PIP_INDEX_URL if set, else pip's default."""
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        from pip._internal.models.index import PyPI

        url = PyPI.simple_url
    return url.rstrip("/") + "/"


def file_url(project: str, filename: str) -> str:
    request = urllib.request.Request(
        index_url() + project + "/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        listing = json.load(response)
    for entry in listing["files"]:
        if entry["filename"] == filename:
            return entry["url"]
    raise SystemExit(f"fetch_deps: {filename} is not on the package index for {project}")


def fetch(project: str, dest: Path) -> None:
    filename, sha256, prefix = PINS[project]
    with urllib.request.urlopen(file_url(project, filename), timeout=60) as response:
        data = response.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise SystemExit(f"fetch_deps: {filename}: sha256 {digest} does not match the pin {sha256}")
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for member in archive.getmembers():
            if not member.isfile() or not member.name.startswith(prefix):
                continue
            target = dest / "umqtt" / member.name[len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.extractfile(member).read())
    (dest / "umqtt" / "__init__.py").touch()
    print(f"fetch_deps: {filename} (sha256 verified) -> {dest}/umqtt")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="folder to extract into (e.g. build/deps)")
    args = parser.parse_args(argv)
    try:
        for project in PINS:
            fetch(project, args.dest)
    except OSError as error:
        print(f"fetch_deps: cannot reach the package index: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
