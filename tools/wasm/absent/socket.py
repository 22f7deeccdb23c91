# socket, absent from the wasm32 MicroPython: importable, every use raises OSError. MIT licence.
"""The WebAssembly MicroPython has no sockets. Device modules import `socket` at the top
(jobs.mqtt, jobs.ops.https, umqtt.simple), so this stand-in lets them load for the tests
that never open a connection (or bring their own socket object); opening one raises
OSError(EOPNOTSUPP). `getaddrinfo` answers for a numeric IPv4 address, which needs no
resolver, as the ports' do; a name raises. Tests that need the network declare `needs=` and
are skipped on this runtime (docs/testing.md)."""

from _absent import absent

AF_INET = 2
SOCK_STREAM = 1
SOL_SOCKET = 1
SO_REUSEADDR = 2
IPPROTO_TCP = 6
TCP_NODELAY = 1

socket = absent("sockets")
_resolve = absent("name resolution")


def getaddrinfo(host, port, *args):
    parts = str(host).split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        _resolve()
    return [(AF_INET, SOCK_STREAM, IPPROTO_TCP, "", (str(host), port))]
