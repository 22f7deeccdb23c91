# The simulated board: OTA slots with ESP-IDF boot semantics, reset reasons, watchdog, halt,
# development mode, simulated network faults, the DevKitC pin table.
import sys
import time

from fakeclock import FakeClock
from mptest import raises
from opstate import boot_again, fresh_board


def _image(b, version, first=0xE9):
    slot = b.ota()
    block = bytearray(4096)
    block[0] = first
    slot.writeblocks(0, block)
    b.record_version(slot.info()[4], version)
    return slot


def test_first_boot_runs_slot_0_valid():
    b = fresh_board()
    assert (b.running_slot(), b.boot_state(), b.firmware_version()) == ("ota_0", "VALID", "1.0.0")
    assert b.ota().info()[4] == "ota_1"
    assert b.ota().ioctl(4, 0) * b.ota().ioctl(5, 0) == 0x180000
    assert b.reset_reason() == "power on"


def test_new_image_boots_pending_then_valid():
    b = fresh_board()
    _image(b, "2.0.0").set_boot()
    assert b.running_slot() == "ota_0"  # nothing changes before the reset
    b = boot_again(b)
    assert (b.running_slot(), b.boot_state(), b.firmware_version()) == ("ota_1", "PENDING_VERIFY", "2.0.0")
    b.mark_valid()
    b = boot_again(b)
    assert (b.running_slot(), b.boot_state()) == ("ota_1", "VALID")
    assert b.ota().info()[4] == "ota_0"


def test_reset_before_mark_valid_rolls_back():
    b = fresh_board()
    _image(b, "2.0.0").set_boot()
    b = boot_again(b)
    assert b.boot_state() == "PENDING_VERIFY"
    b = boot_again(b)
    assert (b.running_slot(), b.boot_state(), b.firmware_version()) == ("ota_0", "VALID", "1.0.0")
    b = boot_again(b)
    assert b.running_slot() == "ota_0"


def test_set_boot_refuses_a_non_image():
    b = fresh_board()
    slot = _image(b, "2.0.0", first=0x00)
    with raises(OSError) as caught:
        slot.set_boot()
    assert caught.value.args[0] == -5379
    assert boot_again(b).running_slot() == "ota_0"


def test_no_ota_partition():
    assert fresh_board(ota=False).ota() is None


def test_reset_exits_75_and_the_reason_survives_one_boot():
    b = fresh_board()
    with raises(SystemExit) as caught:
        b.reset("because")
    assert caught.value.args[0] == 75
    b = boot_again(b)
    assert b.reset_reason() == "because"
    assert boot_again(b).reset_reason() == "power on"


def test_late_watchdog_feed_resets():
    b = fresh_board()
    dog = b.watchdog(20)
    dog.feed()
    time.sleep_ms(40)
    with raises(SystemExit):
        dog.feed()
    assert boot_again(b).reset_reason() == "watchdog"


def test_time_is_unix_epoch_seconds():
    b = fresh_board()
    assert isinstance(b.time(), int) and b.time() > 1700000000


def test_esp32_family_pin_tables_bar_flash_and_strapping_pins():
    # import the real board modules with machine/esp32/network replaced (the tables are what we test)
    class Fake:
        PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5

    for name in ("machine", "esp32", "network"):
        sys.modules[name] = Fake
    root = __file__.rsplit("/", 3)[0]
    sys.path.insert(0, root + "/boards/esp32")
    try:
        expected = {
            "esp32": (
                (6, "flash"),
                (11, "flash"),
                (16, "psram"),
                (0, "strapping"),
                (15, "strapping"),
                (1, "uart"),
            ),
            "esp32s3": ((26, "flash"), (32, "flash"), (0, "strapping"), (3, "strapping"), (46, "strapping")),
            "esp32c3": ((12, "flash"), (17, "flash"), (2, "strapping"), (8, "strapping"), (9, "strapping")),
        }
        for chip in expected:
            sys.path.insert(0, root + "/boards/" + chip)
            sys.modules.pop("board", None)
            import board as chip_board

            sys.path.pop(0)
            assert chip_board.Board.name == chip
            for number, kind in expected[chip]:
                with raises(ValueError) as caught:
                    chip_board.Board.resolve(number)
                assert kind in caught.value.args[0], caught.value.args
            assert chip_board.Board.resolve("LED")[1] == "out"
    finally:
        sys.path.pop(0)
        for name in ("machine", "esp32", "network", "board", "espboard"):
            sys.modules.pop(name, None)


def test_the_devkitc_table_is_the_one_the_unix_board_uses():
    import board as unix_board
    import devkitc

    assert unix_board.Board.table is devkitc.TABLE
    for number, kind in (
        (1, "uart"),
        (3, "uart"),
        (16, "psram"),
        (17, "psram"),
        (6, "flash"),
        (0, "strapping"),
    ):
        with raises(ValueError) as caught:
            unix_board.Board.resolve(number)
        assert caught.value.args[0] == "pin: " + str(number) + " is a " + kind + " pin, never allowed"


def test_halt_exits_78_and_is_not_a_reset():
    b = fresh_board()
    with raises(SystemExit) as caught:
        b.halt("config.json: bad")
    assert caught.value.args[0] == 78
    assert boot_again(b).reset_reason() == "power on"  # nothing recorded: not a reset


def test_boot_button_is_gpio0_held_low_in_pins_json():
    from jobs import store

    b = fresh_board()
    assert b.boot_held() is False  # absent: released (pulled up)
    store.save(b.root + "/simboard/pins.json", {"0": 0})
    assert boot_again(b).boot_held() is True
    store.save(b.root + "/simboard/pins.json", {"0": 1})
    assert boot_again(b).boot_held() is False


def test_network_faults_are_simulated_with_the_chips_messages():
    from jobs import store

    b = fresh_board()
    assert b.connect_network(30000) is True
    store.save(b.root + "/simboard/network.json", {"wifi": "STAT_NO_AP_FOUND"})
    with raises(OSError) as caught:
        b.connect_network(30000)
    assert (
        caught.value.args[0] == "Wi-Fi '': no connection within 30000 ms, status STAT_NO_AP_FOUND (simulated)"
    )
    store.save(b.root + "/simboard/network.json", {"ntp": True})
    with raises(OSError) as caught:
        b.connect_network(30000)
    assert caught.value.args[0] == "time sync: no answer from pool.ntp.org"
    store.remove(b.root + "/simboard/network.json")
    assert b.connect_network(30000) is True


def test_psram_is_a_knob_default_off():
    assert fresh_board().psram is False
    assert fresh_board(psram=True).psram is True


def test_uptime_is_right_across_the_tick_wrap():
    # 3-day steps from 1 s before the wrap: ticks_diff from boot goes negative after 6.2 days
    # on a 32-bit port (the wasm32 run of this test); the board's uptime must not
    import time

    b = fresh_board()
    with FakeClock(time.ticks_add(0, -1000), 3 * 86_400_000):
        assert [b.uptime() for _ in range(4)] == [3 * 86_400, 6 * 86_400, 9 * 86_400, 12 * 86_400]
