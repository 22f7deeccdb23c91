# jobs: AWS IoT Jobs for MicroPython (ESP32 and the Unix port). MIT licence.
"""AWS IoT Jobs device library: topics, bounded JSON scanning, MQTT transport, client, engine."""

import sys

__version__ = "0.1.0"


def unload(name):
    """Drop the module `name` (imported again when next asked for), so its code leaves the
    heap once nothing else holds it: code the boot or one rare job needed."""
    sys.modules.pop(name, None)
    parent, _, child = name.rpartition(".")
    package = sys.modules.get(parent)
    if package is not None and hasattr(package, child):
        delattr(package, child)
