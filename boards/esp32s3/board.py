# board (esp32s3): ESP32-S3-DevKitC-1. MIT licence.
"""Pins jobs may touch on an ESP32-S3; the logic is boards/esp32/espboard.py (deploy both files).

Barred, from the ESP-IDF GPIO guide (esp32s3) and the ESP32-S3 datasheet "Strapping Pins":
26-32 SPI flash/PSRAM, 33-37 octal flash/PSRAM (R8/N8R8 modules), 0/3/45/46 strapping,
19/20 USB-JTAG, 43/44 UART0. The S3 has no input-only pins. BOOT is GPIO0.
"""

from espboard import EspBoard
from jobs.ops.pins import IN, OUT, PinTable, reserved

TABLE = PinTable(
    {
        "LED": (4, OUT, 0),
        "RELAY1": (5, OUT, 0),
        "RELAY2": (6, OUT, 0),
        "RELAY3": (7, OUT, 0),
        "RELAY4": (15, OUT, 0),
        "BUTTON": (16, IN, 0),
        "SENSOR": (17, IN, 0),
    },
    reserved(
        flash=(26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37),
        strapping=(0, 3, 45, 46),
        usb=(19, 20),
        uart=(43, 44),
    ),
)


class Board(EspBoard):
    name = "esp32s3"
    table = TABLE
    pins = TABLE.pins
    boot_pin = 0  # the BOOT button: development mode when held as main.py starts
