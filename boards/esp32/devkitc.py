# devkitc: the pins of an ESP32-DevKitC, for boards/esp32 and the simulated boards/unix. MIT licence.
"""The one pin table of the ESP32-DevKitC (WROOM/WROVER modules); no hardware is imported, so
the simulated unix board uses the same table and gives the same reasons as the chip.

Barred (ESP-IDF GPIO guide, esp32 table): 6-11 SPI flash, 16-17 PSRAM on WROVER modules,
0/2/5/12/15 strapping, 1/3 UART0 (the REPL). 34-39 are input-only: listed as inputs.
BOOT_PIN is the DevKitC's BOOT button (GPIO0, low while pressed): held as main.py starts, it
selects the development mode (docs/operations.md, "Boot").
"""

from jobs.ops.pins import IN, OUT, PinTable, reserved
from micropython import const

BOOT_PIN = const(0)

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
    reserved(flash=(6, 7, 8, 9, 10, 11), psram=(16, 17), strapping=(0, 2, 5, 12, 15), uart=(1, 3)),
)
