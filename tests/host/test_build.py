"""`make build`: every device module becomes .mpy; a compile error fails the build."""

import pytest

from tools import build


def test_every_device_module_is_compiled(tmp_path):
    written = build.build(tmp_path)
    sources = list(build.device_sources())
    assert len(written) == len(sources) > 0
    for mpy in written:
        assert mpy.read_bytes()[:2] == b"M\x06"


def test_a_compile_error_fails_the_build(tmp_path):
    project = tmp_path / "project"
    (project / "lib").mkdir(parents=True)
    (project / "lib" / "broken.py").write_text("def f(:\n")
    with pytest.raises(SystemExit, match="broken.py"):
        build.build(tmp_path / "out", root=project)
