# jobs.tls: the mutual-TLS context for the MQTT connection. MIT licence.
"""The SSLContext `jobs.mqtt.MQTT` wraps its socket with (`ssl=`); verification is always on.

The transport wraps with `server_hostname=<endpoint>` (SNI and the host-name check). The
DER bytes are parsed into the context here and not kept: after `context()` returns, the
caller's certificate, key and CA bytes can be collected.
"""

import ssl


def context(ca, cert, key):
    """An SSLContext that requires the server to present a certificate signed by `ca`.

    `ca`, `cert`, `key` are DER bytes. micropython-lib's ssl.SSLContext defaults to
    CERT_NONE, so CERT_REQUIRED is set explicitly and cannot be turned off here.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=ca)
    ctx.load_cert_chain(cert, key)
    return ctx
