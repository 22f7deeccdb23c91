# socket, absent from the wasm32 MicroPython: importable, every use raises OSError. MIT licence.
"""The WebAssembly MicroPython has no sockets. Device modules import `socket` at the top
(jobs.mqtt, jobs.ops.https, umqtt.simple), so this stand-in lets them load for the tests
that never open a connection; opening one raises OSError(EOPNOTSUPP). Tests that need the
network declare `needs=` and are skipped on this runtime (docs/testing.md)."""

from _absent import absent

AF_INET = 2
SOCK_STREAM = 1
SOL_SOCKET = 1
SO_REUSEADDR = 2
IPPROTO_TCP = 6
TCP_NODELAY = 1

socket = getaddrinfo = absent("sockets")
