# standinctl: device-test helpers to drive the local AWS IoT stand-in. MIT licence.
"""The stand-in's control plane (plain HTTP on 127.0.0.1) and its things, from MicroPython.

One request per connection with `Connection: close`: the JSON answer is read to EOF, no chunking.
"""

import json
import socket
from binascii import hexlify
from os import urandom

from mptest import env, read

_ARN = "arn:aws:iot:us-east-1:123456789012:thing/"


def _control_address():
    url = env("MPTEST_STANDIN_CONTROL")  # http://127.0.0.1:PORT
    host, port = url.split("//", 1)[1].rstrip("/").split(":")
    return socket.getaddrinfo(host, int(port))[0][-1]


# the endpoint routes by the SigV4 credential scope's service; it checks no signature
_DATA_PLANE = (
    "Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/iot-jobs-data/aws4_request\r\n"
)


def call(method, path, body=None, extra=""):
    """One control-plane request; the decoded JSON answer. A non-2xx status raises."""
    data = b"" if body is None else json.dumps(body).encode()
    head = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + extra
    head += "Content-Type: application/json\r\nContent-Length: " + str(len(data)) + "\r\n\r\n"
    s = socket.socket()
    try:
        s.connect(_control_address())
        s.write(head.encode())
        s.write(data)
        # parsed from the stream, never held whole: heap-limited tests create jobs with this
        status = int(s.readline()[9:12])
        while s.readline() not in (b"\r\n", b""):
            pass
        answer = json.load(s)
    finally:
        s.close()
    if not 200 <= status < 300:
        raise AssertionError("stand-in: " + method + " " + path + " -> " + str(status) + " " + str(answer))
    return answer


def create_job(job_id, doc, thing, **fields):
    """CreateJob for one thing (the service notifies the device, as AWS does)."""
    body = {"targets": [_ARN + thing], "document": json.dumps(doc)}
    body.update(fields)
    return call("PUT", "/jobs/" + job_id, body)


def execution(thing, job_id):
    """DescribeJobExecution: {status, versionNumber, statusDetails: {detailsMap}, ...} or None."""
    try:
        return call("GET", "/things/" + thing + "/jobs/" + job_id)["execution"]
    except AssertionError as err:
        if "ResourceNotFound" in str(err) or "404" in str(err):
            return None
        raise


def details(thing, job_id):
    found = execution(thing, job_id) or {}
    return found.get("statusDetails", {}).get("detailsMap", {})


def status(thing, job_id):
    return (execution(thing, job_id) or {}).get("status")


def data_plane_update(thing, job_id, status, details=None):
    """UpdateJobExecution over the HTTPS data plane's route: another writer, as an operator's tool."""
    body = {"status": status}
    if details:
        body["statusDetails"] = details
    return call("POST", "/things/" + thing + "/jobs/" + job_id, body, _DATA_PLANE)


def cancel_job(job_id, force=False):
    return call("PUT", "/jobs/" + job_id + "/cancel" + ("?force=true" if force else ""), {})


def settings(**values):
    """Change stand-in settings (fault injection, AWS's open choices); the next request sees them."""
    return call("PUT", "/standin/settings", values)


def no_faults():
    settings(throttle_every=0, internal_error_rate=0.0, duplicate_responses=False, response_delay=0.0)


_FILES = {}


def new_thing(prefix):
    """Register a thing no test has used (no executions left over) and issue its EC certificate."""
    name = prefix + "-" + hexlify(urandom(3)).decode()
    issued = call("POST", "/standin/things/" + name + "?kind=ec")
    _FILES[name] = (
        env("MPTEST_STANDIN_PKI") + "/ca.cert.der",
        issued["certificateDer"],
        issued["privateKeyDer"],
    )
    return name


def files(thing):
    """(ca, cert, key) DER paths of a thing made by new_thing()."""
    return _FILES[thing]


def identity(thing):
    """(ca, cert, key) DER bytes of a thing made by new_thing()."""
    return tuple(read(path) for path in _FILES[thing])


def port():
    return int(env("MPTEST_STANDIN_PORT"))
