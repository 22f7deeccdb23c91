# usocket: the u-name umqtt.simple 1.3.4 imports; see socket.py. MIT licence.
from socket import *  # noqa: F403
