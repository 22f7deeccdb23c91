# board (esp32): ESP32-DevKitC and other ESP32-WROOM/WROVER boards. MIT licence.
"""The ESP32 board: the DevKitC pin table (devkitc.py) over the logic in espboard.py (deploy
all three files)."""

from devkitc import BOOT_PIN, TABLE
from espboard import EspBoard


class Board(EspBoard):
    name = "esp32"
    table = TABLE
    pins = TABLE.pins
    boot_pin = BOOT_PIN
