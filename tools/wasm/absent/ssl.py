# ssl, absent from the wasm32 MicroPython (no TLS): importable, every use raises OSError. MIT licence.
"""See socket.py: jobs.tls and jobs.ops.https import `ssl` at the top."""

from _absent import absent

PROTOCOL_TLS_CLIENT = 0
PROTOCOL_TLS_SERVER = 1
CERT_NONE = 0
CERT_OPTIONAL = 1
CERT_REQUIRED = 2

SSLContext = wrap_socket = absent("TLS")
