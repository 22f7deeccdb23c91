# ussl: host-only compatibility module for umqtt.simple 1.3.4. MIT licence.
"""`ussl` was removed in MicroPython v1.23; umqtt.simple 1.3.4 still imports it.

On the host the registry's umqtt.simple 1.3.4 is used, so this module maps `ussl` onto the
current `ssl` module. It lives only in boards/unix: ESP32 firmware ships a newer umqtt.simple
that takes an SSLContext and never imports `ussl`.
"""

from ssl import *  # noqa: F403
from ssl import wrap_socket  # noqa: F401
