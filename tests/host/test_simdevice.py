"""The simulated device: a bad config.json or a missing certificate halts it with a clear
message; a broken handlers.py is reported and boot goes on."""

import json
from pathlib import Path

from tools.simdevice import EXIT_CONFIG, SimDevice


def test_bad_config_halts_with_the_key_named(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"thing_name": "sim", "endpoint": "localhost", "port": "x"})
    )
    device = SimDevice(tmp_path).start()
    device._thread.join(30)
    assert not device._thread.is_alive()  # halted: not booting again into the same error
    assert device.exits == [EXIT_CONFIG]
    assert "config key 'port': must be an integer" in device.output()


def test_a_broken_handlers_py_is_reported_and_a_missing_certificate_halts(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text(
        json.dumps({"thing_name": "sim", "endpoint": "localhost", "port": 1})
    )
    (tmp_path / "handlers.py").write_text("import no_such_helper\n")
    monkeypatch.chdir(tmp_path.parent)  # a relative folder, as `python -m tools.simdevice dev/` gets
    device = SimDevice(Path(tmp_path.name)).start()
    device._thread.join(30)
    assert device.exits == [EXIT_CONFIG], device.output()
    out = device.output()
    assert f"cannot read {tmp_path}/certs/ca.cert.der" in out  # the folder resolved, not doubled
    assert "main: handlers.py: ImportError" in out  # reported, and boot went on to the engine
    assert "main: cannot read " in out and "certs/ca.cert.der" in out
    assert "Traceback" not in out
