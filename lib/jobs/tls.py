# jobs.tls: mutual-TLS settings for the MQTT connection. MIT licence.
"""Build the TLS context and the umqtt.simple client for both umqtt generations.

umqtt.simple >= 1.4.0 (frozen into ESP32 firmware v1.23+) takes an SSLContext as `ssl=`
and wraps with `server_hostname=server` (SNI and host-name check). 1.3.4 (the registry's
only release, used on the host) takes any truthy `ssl` and calls
`ussl.wrap_socket(sock, **ssl_params)`. `new_client` serves both: it passes the context
and also sets `ssl_params` in the legacy `wrap_socket` form. Verification is always on.
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


def legacy_params(ca, cert, key, host):
    """The `ssl_params` umqtt.simple 1.3.4 hands to `ussl.wrap_socket`."""
    return {
        "key": key,
        "cert": cert,
        "cadata": ca,
        "cert_reqs": ssl.CERT_REQUIRED,
        "server_hostname": host,
    }


def new_client(cls, client_id, host, port, keepalive, ca, cert, key):
    """An instance of the umqtt.simple `cls` (or a subclass) set up for mutual TLS."""
    client = cls(client_id, host, port, keepalive=keepalive, ssl=context(ca, cert, key))
    client.ssl_params = legacy_params(ca, cert, key, host)
    return client
