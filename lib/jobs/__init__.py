# jobs: AWS IoT Jobs for MicroPython (ESP32 and the Unix port). MIT licence.
"""AWS IoT Jobs device library: topics, bounded JSON scanning, MQTT transport, client, engine."""

__version__ = "0.1.0"
