# board (esp32c3): ESP32-C3-DevKitM-1 / DevKitC-02. MIT licence.
"""Pins jobs may touch on an ESP32-C3; the logic is boards/esp32/espboard.py (deploy both files).

Barred, from the ESP-IDF GPIO guide (esp32c3: "GPIO12-17 are usually used for SPI flash",
"GPIO18 and 19 are used by USB-JTAG") and the ESP32-C3 datasheet / ESP32-C3 book "Strapping
Pins" (GPIO2, GPIO8, GPIO9): 12-17 flash, 2/8/9 strapping, 18/19 USB, 20/21 UART0. The
DevKitM-1's RGB LED sits on strapping pin 8, so LED here is GPIO3. No input-only pins.
"""

from espboard import EspBoard
from jobs.ops.pins import IN, OUT, PinTable, reserved

TABLE = PinTable(
    {
        "LED": (3, OUT, 0),
        "RELAY1": (4, OUT, 0),
        "RELAY2": (5, OUT, 0),
        "RELAY3": (6, OUT, 0),
        "RELAY4": (7, OUT, 0),
        "BUTTON": (10, IN, 0),
        "SENSOR": (1, IN, 0),
    },
    reserved(flash=(12, 13, 14, 15, 16, 17), strapping=(2, 8, 9), usb=(18, 19), uart=(20, 21)),
)


class Board(EspBoard):
    name = "esp32c3"
    table = TABLE
    pins = TABLE.pins
    boot_pin = 9  # the BOOT button (strapping GPIO9): development mode when held as main.py starts
