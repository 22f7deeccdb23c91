# jobs.config (validation naming the bad key, remote settings) and jobs.store (atomic files).
import json
import os

from jobs import config, store, telemetry
from mptest import raises

PATH = "/tmp/mptest-config-" + str(id(object())) + ".json"
GOOD = {"endpoint": "abc-ats.iot.eu-west-1.amazonaws.com", "thing_name": "thing-1"}


def _write(value):
    with open(PATH, "w") as f:
        f.write(value if isinstance(value, str) else json.dumps(value))


def _error(value):
    _write(value)
    with raises(config.ConfigError) as caught:
        config.load(PATH)
    return str(caught.value)


def test_defaults_are_filled_in():
    _write(GOOD)
    cfg = config.load(PATH)
    assert cfg["port"] == 8883 and cfg["buffer_size"] == 8192 and cfg["keepalive"] == 60
    assert cfg["thing_name"] == "thing-1"


def test_keys_read_by_operations_and_boards_are_optional():
    _write(GOOD)
    cfg = config.load(PATH)
    assert "board_state_dir" not in cfg and "https_ca" not in cfg
    _write(dict(GOOD, board_state_dir="/tmp/x", https_ca="ca2.der", board_ota=False))
    cfg = config.load(PATH)
    assert cfg["board_state_dir"] == "/tmp/x" and cfg["https_ca"] == "ca2.der" and cfg["board_ota"] is False
    assert "'board_ota_slot_size'" in _error(dict(GOOD, board_ota_slot_size=1))


def test_every_error_names_the_key():
    assert "'thing_name': missing" in _error({"endpoint": "x"})
    assert "'port': must be an integer 1..65535" in _error(dict(GOOD, port="8883"))
    assert "'port'" in _error(dict(GOOD, port=70000))
    assert "'portt': unknown key" in _error(dict(GOOD, portt=1))
    assert "'query_next_first': must be true or false" in _error(dict(GOOD, query_next_first=1))
    assert "'max_document': must not exceed buffer_size" in _error(
        dict(GOOD, buffer_size=4096, max_document=8192)
    )
    assert "'thing_name'" in _error(dict(GOOD, thing_name="bad name"))
    assert "'watchdog_ms': must be 0 or at least 55000" in _error(dict(GOOD, watchdog_ms=5000))
    assert _error(dict(GOOD, port="x")).startswith(PATH + ": config key 'port'")  # the file is named
    assert "not valid JSON" in _error("{nope")
    assert "must be a JSON object" in _error("[1]")
    os.remove(PATH)
    with raises(config.ConfigError) as caught:
        config.load(PATH)
    assert "cannot be read" in str(caught.value)


def test_apply_remote_validates_applies_and_persists():
    _write(GOOD)
    cfg = config.load(PATH)
    config.apply_remote(cfg, {"telemetry_interval_s": 5, "progress_interval_ms": 100}, PATH)
    assert cfg["telemetry_interval_s"] == 5
    again = config.load(PATH)
    assert again["telemetry_interval_s"] == 5 and again["progress_interval_ms"] == 100
    assert not os.stat(PATH)[6] == 0


def test_apply_remote_refuses_and_changes_nothing():
    _write(GOOD)
    cfg = config.load(PATH)
    for values, words in (
        ({"endpoint": "evil.example"}, "endpoint: not remotely settable"),
        ({"ca": "/other"}, "ca: not remotely settable"),
        ({"telemetry_interval_s": -1}, "telemetry_interval_s: must be an integer"),
        ({"nonsense": 1}, "unknown key nonsense"),
        ({"max_document": 60000}, "max_document: must not exceed buffer_size"),
        ({}, "non-empty"),
    ):
        with raises(ValueError) as caught:
            config.apply_remote(cfg, values, PATH)
        assert words in str(caught.value), (words, caught.value)
    assert cfg == config.load(PATH)
    assert config.check_remote({"endpoint": "x"}) == "endpoint: not remotely settable"
    assert config.check_remote({"telemetry_interval_s": 5}) is None


def test_the_watchdog_is_on_by_default_and_outlasts_every_wait_between_feeds():
    cfg = config.validate(GOOD)
    assert (cfg["watchdog_ms"], cfg["boot_timeout_ms"]) == (120000, 300000)
    # the longest wait is an HTTPS connection: 15 s name lookup + 3 x 10 s, plus 10 s slack
    assert config.watchdog_floor(cfg) == 55000
    # an MQTT request: PUBACK + answer, 2 x 60 s (the connect: 15 + 10 + 60 s), plus slack
    assert config.watchdog_floor(dict(cfg, request_timeout_ms=60000)) == 130000
    assert config.watchdog_floor(dict(cfg, https_timeout_ms=120000)) == 385000
    assert "'watchdog_ms': must be 0 or at least 130000" in _error(dict(GOOD, request_timeout_ms=60000))
    assert config.validate(dict(GOOD, request_timeout_ms=60000, watchdog_ms=0))["watchdog_ms"] == 0  # off
    assert config.validate(dict(GOOD, request_timeout_ms=60000, watchdog_ms=130000))["watchdog_ms"] == 130000


def test_a_config_set_that_would_let_the_watchdog_fire_is_refused():
    _write(GOOD)
    cfg = config.load(PATH)
    for values in ({"request_timeout_ms": 60000}, {"https_timeout_ms": 120000, "retries": 2}):
        with raises(ValueError) as caught:
            config.apply_remote(cfg, values, PATH)
        need = str(config.watchdog_floor(dict(cfg, **values)))
        keys = ", ".join(sorted(values))
        assert str(caught.value) == keys + ": would let the watchdog fire (watchdog_ms 120000 < " + need + ")"
    assert cfg == config.load(PATH)  # nothing changed
    config.apply_remote(cfg, {"https_timeout_ms": 30000}, PATH)  # 15 + 90 + 10 s: fits in 120 s
    assert config.load(PATH)["https_timeout_ms"] == 30000


def test_store_writes_atomically_and_journal_round_trips():
    path = PATH + ".journal"
    store.save(path, {"a": 1})
    assert store.load(path) == {"a": 1}
    assert store.load(path + ".missing", "dflt") == "dflt"
    try:
        os.stat(path + ".tmp")
        raise AssertionError("temporary file left behind")
    except OSError:
        pass
    j = store.Journal(path)
    j.write({"job_id": "j", "execution_number": 1, "phase": "claimed"})
    assert j.read()["phase"] == "claimed"
    with open(path, "w") as f:
        f.write("{half")  # a torn file is never taken for a journal
    assert j.read() is None
    j.clear()
    assert j.read() is None


class _Root:
    root = "/tmp/mptest-telemetry-" + str(id(object()))


def test_telemetry_message_is_bounded_json():
    store.makedirs(_Root.root)
    cfg = {"thing_name": "thing-1", "telemetry_interval_s": 60, "app_version": "app-" + "v" * 100}
    t = telemetry.Telemetry(cfg, _Root)
    stats = {"job": "j" * 200, "jobs_ok": 3, "jobs_failed": 1, "reconnects": 2, "ignored": 7}
    msg = t.message(stats)
    doc = json.loads(msg)
    assert doc["job"] == "j" * 64 and len(doc["app"]) == 32 and doc["jobs_ok"] == 3
    assert len(msg) < 300, len(msg)
    assert t.topic == b"logi2/device/thing-1"
    assert json.loads(t.message({}))["job"] is None
    store.rmtree(_Root.root)


def test_telemetry_counters_survive_a_reset():
    store.makedirs(_Root.root)
    cfg = {"thing_name": "thing-1", "telemetry_interval_s": 60, "app_version": ""}
    t = telemetry.Telemetry(cfg, _Root)

    class Link:
        sent = []

        def publish(self, topic, msg, retain=False, qos=0):
            Link.sent.append((topic, msg, retain))

    t.send(Link(), {"jobs_ok": 6, "jobs_failed": 1, "reconnects": 2})
    assert Link.sent[-1][2] is True  # retained: the last one can be read back
    again = telemetry.Telemetry(cfg, _Root)  # the next boot
    doc = json.loads(again.message({"jobs_ok": 1}))
    assert (doc["jobs_ok"], doc["jobs_failed"], doc["reconnects"]) == (7, 1, 2), doc
    store.rmtree(_Root.root)


def test_store_join_puts_a_relative_path_under_the_root_and_keeps_an_absolute_one():
    assert store.join("/", "config.json") == "/config.json"
    assert store.join("/tmp/dev/", "certs/ca.der") == "/tmp/dev/certs/ca.der"
    assert store.join("state", "app/app.json") == "state/app/app.json"
    assert store.join("/tmp/dev", "/flash/ca.der") == "/flash/ca.der"
    assert store.join("", "journal.json") == "journal.json"


def test_check_remote_names_the_rule_a_value_breaks():
    assert config.check_remote({"retries": 2, "telemetry_interval_s": 0}) is None
    assert config.check_remote({"port": 1}) == "port: not remotely settable"
    assert config.check_remote({"nope": 1}) == "unknown key nope"
    assert config.check_remote({"https_close_mqtt": "yes"}) == "https_close_mqtt: must be true or false"
    assert config.check_remote({}) == "values: must be a non-empty object"
