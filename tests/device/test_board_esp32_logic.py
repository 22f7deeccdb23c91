# The ESP32 boards' logic (boards/esp32/espboard.py) with the port's machine/esp32/network/ntptime
# modules replaced by recorders: no ESP32 is attached here, this checks the logic, not the chip.
import random
import sys
import time

from fakeclock import FakeClock
from mptest import raises

calls = []


class _Pin:
    OUT, IN, PULL_UP = 3, 1, 2
    levels = {}  # what an input reads; a pulled-up input reads 1 when absent

    def __init__(self, number, mode=-1, pull=-1, value=None):
        self.number = number
        calls.append(("Pin", number, mode, value) if pull == -1 else ("Pin", number, mode, pull))

    def value(self):
        return _Pin.levels.get(self.number, 1)


class machine:
    PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
    Pin = _Pin
    cause = 1

    @staticmethod
    def reset_cause():
        return machine.cause

    @staticmethod
    def reset():
        calls.append(("reset",))
        raise SystemExit("machine.reset")

    @staticmethod
    def WDT(timeout):
        return ("WDT", timeout)


class _NVS:
    store = {}

    def __init__(self, namespace):
        self.ns = namespace

    def set_blob(self, key, value):
        _NVS.store[(self.ns, key)] = bytes(value)

    def get_blob(self, key, buf):
        if (self.ns, key) not in _NVS.store:
            raise OSError(-4354)  # ESP_ERR_NVS_NOT_FOUND
        value = _NVS.store[(self.ns, key)]
        buf[: len(value)] = value
        return len(value)

    def erase_key(self, key):
        del _NVS.store[(self.ns, key)]

    def commit(self):
        pass


class _Partition:
    RUNNING = 0
    running = "ota_0"
    has_ota = True

    def __init__(self, id):
        self.label = _Partition.running

    def info(self):
        return (0, 16, 0, 0x180000, self.label, False)

    def get_next_update(self):
        if not _Partition.has_ota:
            raise OSError(-261)
        nxt = _Partition("x")
        nxt.label = "ota_1" if self.label == "ota_0" else "ota_0"
        return nxt

    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        calls.append(("mark_valid",))


class esp32:
    NVS = _NVS
    Partition = _Partition
    HEAP_DATA = 4
    heaps = [(7288, 0, 0, 0), (79912, 35712, 35512, 35108), (15072, 15036, 15036, 15036)]

    @staticmethod
    def idf_heap_info(capabilities):
        return esp32.heaps if capabilities == esp32.HEAP_DATA else []


class _WLAN:
    """The port's STA interface as network_wlan.c behaves: while a connect is requested (and
    reconnects are unlimited) status() says STAT_CONNECTING; after disconnect() it gives the
    last disconnect reason; switching the interface off forgets it."""

    connected = False
    on = False
    requested = False
    reason = 201  # WIFI_REASON_NO_AP_FOUND

    def __init__(self, iface):
        pass

    def active(self, on=None):
        if on is not None:
            _WLAN.on = on
            if not on:
                _WLAN.reason = 0
        return _WLAN.on

    def isconnected(self):
        return _WLAN.connected

    def connect(self, ssid, password):
        calls.append(("connect", ssid, password))
        _WLAN.requested = True

    def disconnect(self):
        _WLAN.requested = False

    def status(self):
        if _WLAN.connected:
            return network.STAT_GOT_IP
        if _WLAN.requested:
            return network.STAT_CONNECTING
        return _WLAN.reason or network.STAT_IDLE


class network:
    STA_IF = 0
    WLAN = _WLAN
    STAT_IDLE, STAT_CONNECTING, STAT_GOT_IP = 1000, 1001, 1010
    STAT_BEACON_TIMEOUT, STAT_NO_AP_FOUND, STAT_WRONG_PASSWORD = 200, 201, 202
    STAT_ASSOC_FAIL = STAT_CONNECT_FAIL = 203


class ntptime:
    host = ""
    answers = True

    @staticmethod
    def settime():
        if not ntptime.answers:
            raise OSError(110)
        calls.append(("ntp", ntptime.host))


def _espboard():
    for name, module in (("machine", machine), ("esp32", esp32), ("network", network), ("ntptime", ntptime)):
        sys.modules[name] = module
    root = __file__.rsplit("/", 3)[0]
    if root + "/boards/esp32" not in sys.path:
        sys.path.append(root + "/boards/esp32")
    sys.modules.pop("espboard", None)
    import espboard
    from jobs.ops.pins import PinTable

    class Board(espboard.EspBoard):
        table = PinTable({"LED": (4, "out", 0), "BUTTON": (34, "in", 0)}, {6: "flash"})
        pins = table.pins

    return espboard, Board


def _cleanup():
    for name in ("machine", "esp32", "network", "ntptime", "espboard"):
        sys.modules.pop(name, None)


def test_outputs_are_driven_to_their_safe_level_at_boot():
    try:
        espboard, Board = _espboard()
        calls.clear()
        Board({})
        assert calls == [("Pin", 4, _Pin.OUT, 0)]
    finally:
        _cleanup()


def test_reset_reason_is_recorded_in_nvs_and_read_once():
    try:
        espboard, Board = _espboard()
        b = Board({})
        assert b.reset_reason() == "power on"
        with raises(SystemExit):
            b.reset("job 42")
        assert _NVS.store[("jobs", "reset")] == b"job 42"
        espboard._recorded = None  # the next boot
        assert Board({}).reset_reason() == "job 42"
        assert ("jobs", "reset") not in _NVS.store
        espboard._recorded = None
        machine.cause = machine.WDT_RESET
        assert Board({}).reset_reason() == "watchdog"
    finally:
        machine.cause = 1
        _cleanup()


def test_ota_pending_until_mark_valid_and_rollback_detected():
    import os

    try:
        espboard, Board = _espboard()
        espboard._OTA_FILE = "/tmp/mptest-esp-ota-" + str(random.getrandbits(30)) + ".json"
        try:
            os.remove(espboard._OTA_FILE)
        except OSError:
            pass
        b = Board({})
        assert b.boot_state() == "VALID" and b.firmware_version().startswith("micropython-")
        assert b.ota().info()[4] == "ota_1"
        b.record_version("ota_1", "2.0.0")
        _Partition.running = "ota_1"  # the bootloader ran the new image
        b = Board({})
        assert (b.boot_state(), b.firmware_version()) == ("PENDING_VERIFY", "2.0.0")
        b.mark_valid()
        assert ("mark_valid",) in calls and b.boot_state() == "VALID"
        b.record_version("ota_0", "3.0.0")
        b = Board({})  # the bootloader rolled back: still ota_1
        assert (b.boot_state(), b.firmware_version()) == ("VALID", "2.0.0")
        _Partition.has_ota = False
        assert b.ota() is None
    finally:
        _Partition.running = "ota_0"
        _Partition.has_ota = True
        _cleanup()


def test_network_times_out_naming_the_status_read_before_switching_off_and_feeds_while_waiting():
    try:
        espboard, Board = _espboard()
        b = Board({"wifi_ssid": "lab", "wifi_password": "pw", "ntp_host": "ntp.lab"})
        feeds = []
        t0 = time.ticks_ms()
        with raises(OSError) as caught:
            b.connect_network(300, lambda: feeds.append(1))
        assert (
            caught.value.args[0] == "Wi-Fi 'lab': no connection within 300 ms, status STAT_NO_AP_FOUND (201)"
        )
        assert time.ticks_diff(time.ticks_ms(), t0) >= 300
        assert len(feeds) >= 2  # fed while it waits, not only after
        assert ("connect", "lab", "pw") in calls and _WLAN.on is False  # switched off after
        _WLAN.reason = 202
        with raises(OSError) as caught:
            b.connect_network(100)
        assert caught.value.args[0].endswith("status STAT_WRONG_PASSWORD (202)")
        _WLAN.reason = 203
        with raises(OSError) as caught:
            b.connect_network(100)
        assert caught.value.args[0].endswith("status STAT_ASSOC_FAIL/STAT_CONNECT_FAIL (203)")
        _WLAN.reason = 15  # an ESP-IDF reason without a STAT_ name (4-way handshake timeout)
        with raises(OSError) as caught:
            b.connect_network(100)
        assert caught.value.args[0].endswith("status 15")
        _WLAN.connected = True
        calls.clear()
        assert b.connect_network(300) is True
        assert calls == [("ntp", "ntp.lab")]
        ntptime.answers = False
        with raises(OSError) as caught:
            b.connect_network(300)
        assert caught.value.args[0] == "time sync: no answer from ntp.lab"
    finally:
        _WLAN.connected = _WLAN.on = _WLAN.requested = False
        _WLAN.reason = 201
        ntptime.answers = True
        _cleanup()


def test_time_is_converted_from_the_2000_epoch():
    try:
        espboard, Board = _espboard()
        b = Board({})
        assert abs(b.time() - int(time.time())) <= 1  # the Unix port's clock is already 1970-based

        class Clock2000:  # the ESP32's: seconds since 2000-01-01
            @staticmethod
            def time():
                return 10

            @staticmethod
            def gmtime(t):
                return (2000, 1, 1, 0, 0, 0, 5, 1)

        espboard.time = Clock2000
        assert b.time() == 946684810
    finally:
        _cleanup()


def test_uptime_is_right_across_the_tick_wrap():
    # ticks_diff(ticks_ms(), 0) is negative from 6.2 days to 12.4 days after boot on the chip
    try:
        espboard, Board = _espboard()
        b = Board({})
        with FakeClock(time.ticks_add(0, -1000), 3 * 86_400_000):
            assert [b.uptime() for _ in range(4)] == [3 * 86_400, 6 * 86_400, 9 * 86_400, 12 * 86_400]
    finally:
        _cleanup()


def test_boot_button_held_is_read_from_its_pin_with_the_pull_up():
    try:
        espboard, Board = _espboard()
        Board.boot_pin = 0
        b = Board({})
        calls.clear()
        assert b.boot_held() is False
        assert calls == [("Pin", 0, _Pin.IN, _Pin.PULL_UP)]
        _Pin.levels[0] = 0
        assert b.boot_held() is True
        Board.boot_pin = None
        assert b.boot_held() is False  # a board without a BOOT button is never in development mode
    finally:
        _Pin.levels.clear()
        _cleanup()


def test_psram_is_told_by_the_heap_regions():
    try:
        espboard, Board = _espboard()
        assert Board({}).psram is False  # internal DRAM regions only (as a WROOM module)
        esp32.heaps = esp32.heaps + [(4194252, 4000000, 3900000, 3800000)]  # a WROVER's 4 MiB
        assert Board({}).psram is True
    finally:
        esp32.heaps = esp32.heaps[:3]
        _cleanup()


def test_ota_state_is_written_through_the_store():
    # jobs.store writes once and renames; a torn /ota.json reads as empty, never as an exception
    from jobs import store

    try:
        espboard, Board = _espboard()
        espboard._OTA_FILE = "/tmp/mptest-esp-ota-" + str(random.getrandbits(30)) + ".json"
        b = Board({})
        b.record_version("ota_1", "2.0.0")
        assert store.load(espboard._OTA_FILE) == {"versions": {"ota_1": "2.0.0"}, "pending": "ota_1"}
        with open(espboard._OTA_FILE, "w") as f:
            f.write('{"versions": {"ota_1": "2.')
        assert Board({}).firmware_version().startswith("micropython-")
        store.remove(espboard._OTA_FILE)
    finally:
        _cleanup()
