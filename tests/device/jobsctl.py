# jobsctl: device-test helpers to reach host services (responder, link proxy). MIT licence.
"""Talk to the scripted Jobs responder and the link proxy over their TCP control ports."""

import json
import socket

from mptest import env, read


def _line(port, text):
    s = socket.socket()
    s.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
    try:
        s.write(text.encode() + b"\n")
        return s.readline()
    finally:
        s.close()


def responder(**cmd):
    """Send one command to the responder; its decoded answer."""
    answer = json.loads(_line(int(env("MPTEST_RESPONDER_PORT")), json.dumps(cmd)))
    if isinstance(answer, dict) and "error" in answer:
        raise AssertionError("responder: " + answer["error"])
    return answer


def proxy(command, control="MPTEST_PROXY_CONTROL"):
    """`freeze`, `thaw`, `drop`, `refuse`, `accept`, `cut N` or `count` the link proxy (control:
    its env name); what follows its `ok` (the count for `count`, else "")."""
    answer = _line(int(env(control)), command)
    assert answer.startswith(b"ok"), answer
    return answer[2:].strip().decode()


def identity(thing):
    pki = env("MPTEST_PKI")
    return (
        read(pki + "/ca.cert.der"),
        read(pki + "/" + thing + ".cert.der"),
        read(pki + "/" + thing + ".key.der"),
    )


def broker_port():
    return int(env("MPTEST_BROKER_PORT"))


def proxy_port():
    return int(env("MPTEST_PROXY_PORT"))
