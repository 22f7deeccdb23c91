"""mosquitto with mutual TLS and per-thing ACLs that mirror an AWS IoT policy.

The certificate's CN is the MQTT identity. A thing may publish and subscribe only under
`$aws/things/<its name>/jobs/...` and `.../streams/...` and publish to `logi2/device/<its name>`; the service
identity sees everything.
"""

import getpass
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tools import certs

SERVICE_IDENTITY = "jobs-service"

_ACL = """\
# the local Jobs service and control plane
user {service}
topic readwrite $aws/things/#
topic readwrite logi2/#

# every thing: its own jobs and stream topics and its telemetry topic (%u = certificate CN)
pattern readwrite $aws/things/%u/jobs/#
pattern readwrite $aws/things/%u/streams/#
pattern write logi2/device/%u
"""

_CONF = """\
per_listener_settings false
persistence false
user {user}
log_dest file {log}
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
acl_file {acl}
allow_anonymous false
max_packet_size 262144
max_queued_messages 100000
set_tcp_nodelay true
"""

# one per listening address (the TLS options belong to the listener above them)
_LISTENER = """\
listener {port} {address}
cafile {ca}
certfile {cert}
keyfile {key}
require_certificate true
use_identity_as_username true
tls_version tlsv1.2
"""


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def port_in_use(port: int, addresses=("127.0.0.1",)) -> str | None:
    """The first address where `port` cannot be bound (something listens there), else None."""
    for address in addresses:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, port))
            except OSError:
                return address
    return None


def mosquitto_binary() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    raise SystemExit(
        "mosquitto is not installed: run `make setup` (as root) or `sudo apt-get install mosquitto`"
    )


@dataclass
class Broker:
    """A mosquitto process on a port of loopback (and of `addresses`), with its state folder."""

    folder: Path
    port: int = 0
    # addresses to listen on (loopback first: the service and local tools use it) and the
    # names the server certificate must cover (devices verify the host name they dial; None:
    # the certificate already in the folder is used as it is, or one for localhost is made)
    addresses: tuple = ("127.0.0.1",)
    server_names: tuple | None = None
    ca: certs.Identity | None = None
    server: certs.Identity | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def log(self) -> Path:
        return self.folder / "mosquitto.log"

    def prepare(self) -> None:
        """Generate the CA and server certificate once; reuse them after."""
        pki = self.folder / "pki"
        if (pki / "ca.cert.pem").exists():
            self.ca = certs.load(pki, "ca")
        else:
            self.ca = certs.make_ca(pki)
        server = certs.load(pki, "server")
        wanted = set(self.server_names or ())
        if server.cert_pem.exists() and wanted <= certs.server_names(server.cert_pem):
            self.server = server
        else:  # new, or a new address to cover: same CA, so devices keep trusting it
            self.server = certs.make_server(self.ca, pki, hosts=self.server_names or certs.LOCAL_NAMES)
        if not certs.load(pki, SERVICE_IDENTITY).cert_pem.exists():
            certs.make_device(self.ca, pki, SERVICE_IDENTITY, kind="ec")

    def device(self, thing: str, kind: str = "rsa") -> certs.Identity:
        """The certificate of `thing`, issued by this broker's CA (made on first use)."""
        pki = self.folder / "pki"
        ident = certs.load(pki, thing)
        if not ident.cert_der.exists():
            ident = certs.make_device(self.ca, pki, thing, kind=kind)
        return ident

    def start(self, timeout: float = 10.0) -> "Broker":
        if self.ca is None:
            self.prepare()
        self.port = self.port or free_port()
        conf, acl = self.folder / "mosquitto.conf", self.folder / "acl"
        acl.write_text(_ACL.format(service=SERVICE_IDENTITY))
        tls = {"ca": self.ca.cert_pem, "cert": self.server.cert_pem, "key": self.server.key_pem}
        conf.write_text(
            _CONF.format(user=getpass.getuser(), log=self.log, acl=acl)
            + "".join(_LISTENER.format(port=self.port, address=a, **tls) for a in self.addresses)
        )
        self.log.write_text("")
        self.process = subprocess.Popen(
            [mosquitto_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._await_ready(timeout)
        return self

    def _await_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace")
                raise RuntimeError(
                    f"mosquitto exited ({self.process.returncode}): {err}{self.log.read_text()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
