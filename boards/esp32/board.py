# board (esp32): ESP32-DevKitC and other ESP32-WROOM/WROVER boards. MIT licence.
"""Pins jobs may touch on an ESP32; the logic is in espboard.py (deploy both files).

Barred (ESP-IDF GPIO guide, esp32 table): 6-11 SPI flash, 16-17 PSRAM on WROVER modules,
0/2/5/12/15 strapping, 1/3 UART0 (REPL). 34-39 are input-only: listed as inputs.
"""

from espboard import EspBoard
from jobs.ops.pins import IN, OUT, PinTable, reserved

TABLE = PinTable(
    {
        "LED": (4, OUT, 0),
        "RELAY1": (25, OUT, 0),
        "RELAY2": (26, OUT, 0),
        "RELAY3": (27, OUT, 0),
        "RELAY4": (32, OUT, 0),
        "BUTTON": (34, IN, 0),
        "SENSOR": (35, IN, 0),
    },
    reserved(flash=(6, 7, 8, 9, 10, 11, 16, 17), strapping=(0, 2, 5, 12, 15), uart=(1, 3)),
)


class Board(EspBoard):
    name = "esp32"
    table = TABLE
    pins = TABLE.pins
