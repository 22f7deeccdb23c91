# jobs.config: the device's config.json, validated at boot. MIT licence.
"""Load and validate `config.json`; apply remotely settable keys (the `config.set` operation).

`load(path)` returns a dict with every key of SCHEMA (defaults filled in) or raises
`ConfigError` whose message names the bad key. Unknown keys are errors too, so a typo in a
key name is reported rather than silently ignored.

The watchdog rule (docs/engine.md, "The watchdog"): between two feeds the device waits at most
for one of: an MQTT connect and its first SUBACK (a name lookup + connect_timeout_ms +
request_timeout_ms), one request (its PUBACK, then its answer: 2 x request_timeout_ms), one
HTTPS connection (a name lookup + TCP connect, TLS handshake and response headers: 3 x
https_timeout_ms). watchdog_ms must exceed the longest of those by _SLACK_MS, at load and
for every config.set.
"""

import json

from micropython import const

from jobs import store

_DNS_MS = const(15000)  # a name lookup runs outside every deadline: the port's resolver decides
_SLACK_MS = const(10000)  # work between feeds that waits on no timeout (TLS arithmetic, flash writes)
_HTTPS_MS = const(10000)  # https_timeout_ms when config.json does not set it

_STR = "str"
_INT = "int"
_BOOL = "bool"
_REQUIRED = None
_OPTIONAL = ()  # absent from the loaded config unless config.json sets it

# (key, type, default, lo, hi, remotely settable). For str, lo/hi bound the length.
SCHEMA = (
    ("endpoint", _STR, _REQUIRED, 1, 253, False),
    ("port", _INT, 8883, 1, 65535, False),
    ("thing_name", _STR, _REQUIRED, 1, 128, False),
    ("cert", _STR, "certs/device.cert.der", 1, 128, False),
    ("key", _STR, "certs/device.key.der", 1, 128, False),
    ("ca", _STR, "certs/ca.cert.der", 1, 128, False),
    ("board", _STR, "esp32", 1, 32, False),
    ("wifi_ssid", _STR, "", 0, 32, False),
    ("wifi_password", _STR, "", 0, 64, False),
    ("app_version", _STR, "", 0, 32, False),
    ("journal", _STR, "journal.json", 1, 128, False),
    ("buffer_size", _INT, 8192, 1024, 65536, False),
    ("max_document", _INT, 8192, 64, 65536, True),
    ("max_details", _INT, 2048, 256, 16384, True),
    ("keepalive", _INT, 60, 2, 1200, True),
    ("connect_timeout_ms", _INT, 10000, 500, 60000, False),
    ("request_timeout_ms", _INT, 10000, 200, 60000, True),
    ("reconnect_min_ms", _INT, 1000, 10, 60000, False),
    ("reconnect_max_ms", _INT, 120000, 100, 3600000, True),
    ("retries", _INT, 4, 0, 10, True),
    ("retry_base_ms", _INT, 1000, 10, 60000, True),
    ("progress_interval_ms", _INT, 10000, 0, 3600000, True),
    ("step_timeout_min", _INT, 0, 0, 10080, True),
    ("telemetry_interval_s", _INT, 60, 0, 86400, True),
    ("query_next_first", _BOOL, False, 0, 1, True),
    ("watchdog_ms", _INT, 120000, 0, 3600000, False),
    ("boot_timeout_ms", _INT, 300000, 1000, 3600000, False),
    # read by operations and boards (docs/operations.md); absent unless set
    ("https_ca", _STR, _OPTIONAL, 1, 128, False),
    ("https_timeout_ms", _INT, _OPTIONAL, 500, 120000, True),
    ("https_close_mqtt", _BOOL, _OPTIONAL, 0, 1, True),
    ("ota_block_size", _INT, _OPTIONAL, 256, 131072, True),
    ("ota_allow_downgrade", _BOOL, False, 0, 1, False),
    ("ntp_host", _STR, _OPTIONAL, 1, 253, False),
    ("board_state_dir", _STR, _OPTIONAL, 1, 128, False),
    ("board_ota", _BOOL, _OPTIONAL, 0, 1, False),
    ("board_ota_slot_size", _INT, _OPTIONAL, 4096, 16777216, False),
    ("board_firmware_version", _STR, _OPTIONAL, 1, 32, False),
    ("codesign_key", _STR, _OPTIONAL, 1, 128, False),
    ("board_psram", _BOOL, _OPTIONAL, 0, 1, False),
)


class ConfigError(ValueError):
    """A bad config.json; the message names the key."""


def _entry(key):
    for entry in SCHEMA:
        if entry[0] == key:
            return entry
    return None


def _thing_name_ok(name):
    for c in name:
        if not (c.isalpha() or c.isdigit() or c in ":_-") or ord(c) > 127:
            return False
    return True


def _check(entry, value):
    """None when `value` fits `entry`, else the reason (without the key)."""
    _, kind, _, lo, hi, _ = entry
    if kind == _BOOL:
        return None if isinstance(value, bool) else "must be true or false"
    if kind == _INT:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            return "must be an integer " + str(lo) + ".." + str(hi)
        return None
    if not isinstance(value, str) or not lo <= len(value) <= hi:
        return "must be a string of " + str(lo) + ".." + str(hi) + " characters"
    return None


def stream_message_size(block):
    """Bytes of the largest MQTT stream data message for blocks of `block` bytes: the base64
    payload and room for the other fields."""
    return (block + 2) // 3 * 4 + 192


def ota_block_size(cfg):
    """The stream block size: config ota_block_size, else 4096 or the largest power of two
    whose data messages fit buffer_size."""
    block = cfg.get("ota_block_size")
    if block:
        return block
    block = 4096
    while block > 256 and stream_message_size(block) > (cfg.get("buffer_size") or 8192):
        block >>= 1
    return block


def watchdog_floor(cfg):
    """The smallest watchdog_ms (other than 0, off) `cfg`'s timeouts allow: the longest wait
    between two feeds (the rule above) plus slack."""
    request = cfg["request_timeout_ms"]
    connect = _DNS_MS + cfg["connect_timeout_ms"] + request
    https = _DNS_MS + 3 * (cfg.get("https_timeout_ms") or _HTTPS_MS)
    return max(connect, 2 * request, https) + _SLACK_MS


def _cross_check(cfg):
    if cfg["max_document"] > cfg["buffer_size"]:
        return "max_document", "must not exceed buffer_size (" + str(cfg["buffer_size"]) + ")"
    block = ota_block_size(cfg)
    if block & (block - 1):
        return "ota_block_size", "must be a power of two (256, 512, ... 131072)"
    if stream_message_size(block) > cfg["buffer_size"]:
        return "ota_block_size", "its data messages (" + str(stream_message_size(block)) + " bytes) must fit buffer_size (" + str(cfg["buffer_size"]) + ")"
    if cfg["reconnect_max_ms"] < cfg["reconnect_min_ms"]:
        return "reconnect_max_ms", "must not be below reconnect_min_ms"
    floor = watchdog_floor(cfg)
    if cfg["watchdog_ms"] and cfg["watchdog_ms"] < floor:
        return "watchdog_ms", "must be 0 or at least " + str(floor) + " for these timeouts"
    if not _thing_name_ok(cfg["thing_name"]):
        return "thing_name", "may hold only letters, digits, ':', '_' and '-'"
    return None


def validate(raw):
    """A full config dict from the decoded `raw` dict; ConfigError naming the bad key."""
    if not isinstance(raw, dict):
        raise ConfigError("config: must be a JSON object")
    for key in raw:
        if _entry(key) is None:
            raise ConfigError("config key '" + str(key) + "': unknown key")
    cfg = {}
    for entry in SCHEMA:
        key, default = entry[0], entry[2]
        if key not in raw:
            if default is _REQUIRED:
                raise ConfigError("config key '" + key + "': missing (required)")
            if default is not _OPTIONAL:
                cfg[key] = default
            continue
        reason = _check(entry, raw[key])
        if reason:
            raise ConfigError("config key '" + key + "': " + reason)
        cfg[key] = raw[key]
    bad = _cross_check(cfg)
    if bad:
        raise ConfigError("config key '" + bad[0] + "': " + bad[1])
    return cfg


def load(path):
    """The validated config in the JSON file `path`; ConfigError whose message starts with `path`."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise ConfigError(path + ": cannot be read")
    try:
        raw = json.loads(text)
    except ValueError:
        raise ConfigError(path + ": not valid JSON")
    try:
        return validate(raw)
    except ConfigError as error:
        raise ConfigError(path + ": " + str(error))


def check_remote(values):
    """None when every key of `values` is known, remotely settable and within its bounds, else
    the reason (what `config.set` checks before it runs)."""
    if not isinstance(values, dict) or not values:
        return "values: must be a non-empty object"
    for key in values:
        entry = _entry(key)
        if entry is None:
            return "unknown key " + str(key)[:64]
        if not entry[5]:
            return key + ": not remotely settable"
        reason = _check(entry, values[key])
        if reason:
            return key + ": " + reason
    return None


def apply_remote(cfg, values, path):
    """Validate `values`, apply them to `cfg` and persist them to `path` atomically.

    Raises ValueError(reason) and changes nothing when any key is unknown, not remotely
    settable, or out of bounds (check_remote), or conflicts with the running config.
    """
    reason = check_remote(values)
    if reason:
        raise ValueError(reason)
    merged = dict(cfg)
    merged.update(values)
    bad = _cross_check(merged)
    if bad and bad[0] == "watchdog_ms":
        need = str(cfg["watchdog_ms"]) + " < " + str(watchdog_floor(merged))
        raise ValueError(", ".join(sorted(values)) + ": would let the watchdog fire (watchdog_ms " + need + ")")
    if bad:
        raise ValueError(bad[0] + ": " + bad[1])
    raw = store.load(path, {})
    if not isinstance(raw, dict):
        raw = {}
    raw.update(values)
    store.save(path, raw)
    cfg.update(values)
