"""`StandIn`: the whole local AWS IoT stand-in as one object (broker, Jobs service, files, control).

with StandIn(folder, minute_seconds=1) as aws:
    device = aws.thing("thing-1")             # registered, certificate issued
    aws.create_job("job-1", {"op": "x"}, ["thing-1"])
    aws.wait_terminal("job-1", "thing-1", timeout=10)
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tools import certs
from tools.broker import SERVICE_IDENTITY, Broker, port_in_use
from tools.standin.control import ControlServer
from tools.standin.core import TERMINAL, ApiError
from tools.standin.engine import Engine
from tools.standin.files import FileServer
from tools.standin.store import Store

ROOT = Path(__file__).resolve().parent.parent.parent
ENDPOINT = "localhost"
_LOOPBACK = ("", "localhost", "127.0.0.1")


def listen_address(host: str) -> str:
    """The IPv4 address of this machine that `host` (a name or an address) stands for."""
    try:
        address = socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0]
    except (socket.gaierror, UnicodeError) as err:
        raise ValueError(f"cannot resolve --host {host!r}: {err}") from None
    with socket.socket() as sock:
        try:
            sock.bind((address, 0))
        except OSError as err:
            raise ValueError(
                f"cannot listen on {host} ({address}): {err.strerror}; give an address of this machine"
            ) from None
    return address


class PortInUse(RuntimeError):
    """A port the stand-in should listen on is held by another process."""


class StandIn:
    """Broker, Jobs service (a child process), HTTPS file server and control plane on loopback.

    Ports not given are the ones the last start in `folder` used (a free one the first time);
    `host` (kept likewise) is one more address to listen on for MQTT and files, put in the
    server certificate, and named as the endpoint: how a chip on the local network connects.
    """

    def __init__(self, folder, control_port: int | None = None, files_port: int | None = None,
                 broker_port: int | None = None, host: str | None = None, **settings):  # fmt: skip
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.folder / "state.sqlite")
        saved = self.store.settings()
        host = saved["host"] if host is None else host
        self.host = "" if host in _LOOPBACK else host
        self.endpoint = self.host or ENDPOINT
        self.addresses = ("127.0.0.1",) + ((listen_address(self.host),) if self.host else ())
        names = certs.LOCAL_NAMES + ((self.host, self.addresses[1]) if self.host else ())
        given = {"mqtt_port": broker_port, "control_port": control_port, "files_port": files_port}
        self._kept = {key for key, port in given.items() if port is None}
        self._ports = {key: saved[key] if port is None else port for key, port in given.items()}
        self.broker = Broker(
            self.folder / "broker",
            port=self._ports["mqtt_port"],
            addresses=self.addresses,
            server_names=names,
        )
        self.engine = Engine(self.store)
        self.files = self.folder / "files"
        self._settings = settings
        self.service: subprocess.Popen | None = None
        self.control: ControlServer | None = None
        self.file_server: FileServer | None = None

    # ----- life cycle ---------------------------------------------------------------------
    def _check_ports(self) -> None:
        """A port this folder keeps but something else now holds: say so rather than move it."""
        for key, what, addresses in (
            ("mqtt_port", "MQTT", self.addresses),
            ("control_port", "control-plane", ("127.0.0.1",)),
            ("files_port", "files", self.addresses),
        ):
            port = self._ports[key]
            where = port_in_use(port, addresses) if port else None
            if where is None:
                continue
            if key in self._kept:
                raise PortInUse(
                    f"the {what} port {port} that {self.folder} keeps is in use on {where} (another "
                    f"stand-in on this state folder?): stop that process, or give a new port "
                    f"(0: any free one; devices provisioned for {port} then need provisioning again)"
                )
            raise PortInUse(f"the {what} port {port} is in use on {where}")

    def start(self) -> "StandIn":
        self._check_ports()
        self.broker.prepare()
        self.broker.start()
        try:
            self.file_server = FileServer(
                self.files,
                self.store,
                self.broker.server.cert_pem,
                self.broker.server.key_pem,
                self._ports["files_port"],
                addresses=self.addresses,
                host=self.endpoint,
            )
            # faults are for one run; other settings given before persist in the state folder
            no_faults = {"throttle_every": 0, "internal_error_rate": 0.0, "duplicate_responses": False,
                         "response_delay": 0.0}  # fmt: skip
            self.control = ControlServer(
                self.engine, self.endpoint, self._ports["control_port"], issue=self.thing
            )
            self.store.set(
                mqtt_port=self.broker.port,
                control_port=self.control.port,
                files_port=self.file_server.port,
                files_host=self.endpoint,
                files_folder=str(self.files),
                host=self.host,
                **{**no_faults, **self._settings},
            )
            self.engine.refresh_settings()
            self.start_service()
            (self.folder / "standin.json").write_text(json.dumps(self.describe(), indent=2) + "\n")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.stop_service(graceful=True)
        for server in (self.control, self.file_server):
            if server is not None:
                server.stop()
        self.control = self.file_server = None
        self.broker.stop()
        self.store.close()

    def __enter__(self) -> "StandIn":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def describe(self) -> dict:
        """Where everything is (printed by `up`, written to standin.json; docs/standin.md)."""
        pki = self.broker.folder / "pki"
        return {
            "endpoint": self.endpoint,
            "mqtt_port": self.broker.port,
            "listen": list(self.addresses),
            "control_url": self.control_url,
            "fleet_url": self.control.fleet_url if self.control else None,
            "files_url": self.files_url,
            "files_folder": str(self.files),
            "certificates": str(pki),
            "ca": str(self.broker.ca.cert_pem),
            "ca_der": str(self.broker.ca.cert_der),
            "code_signing_cert": str(self.engine.signer().cert_pem),
            "region": self.engine.settings["region"],
            "account": self.engine.settings["account"],
            "state": str(self.store.path),
            "service_pid": self.service.pid if self.service else None,
        }

    # ----- the Jobs service process -------------------------------------------------------
    @property
    def _ready(self) -> Path:
        return self.folder / "service.ready"

    def start_service(self, timeout: float = 15.0) -> None:
        """Start the Jobs service process and wait until it has subscribed."""
        if self.service is not None and self.service.poll() is None:
            return
        self._ready.unlink(missing_ok=True)
        log = (self.folder / "service.log").open("a")
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.service = subprocess.Popen(
            [sys.executable, "-m", "tools.standin", "service", "--state", str(self.folder),
             "--port", str(self.broker.port)],
            stdout=log, stderr=log, env=env, cwd=str(ROOT),
        )  # fmt: skip
        log.close()
        self._await_service(timeout)

    def _await_service(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.service.poll() is not None:
                raise RuntimeError(f"the Jobs service exited: {self._service_log()}")
            try:
                if self._ready.read_text() == str(self.service.pid):
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"the Jobs service did not subscribe within {timeout}s: {self._service_log()}")

    def _service_log(self) -> str:
        try:
            return (self.folder / "service.log").read_text()[-2000:]
        except OSError:
            return ""

    def stop_service(self, graceful: bool = False) -> None:
        """Kill the Jobs service (SIGKILL unless graceful): state on disk must survive it."""
        if self.service is None:
            return
        if self.service.poll() is None:
            self.service.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                self.service.wait(5)
            except subprocess.TimeoutExpired:
                self.service.kill()
                self.service.wait()
        self.service = None
        self._ready.unlink(missing_ok=True)

    def stop_broker(self) -> None:
        self._ready.unlink(missing_ok=True)
        self.broker.stop()

    def start_broker(self, timeout: float = 15.0) -> None:
        """Restart mosquitto on the same port and wait for the service to subscribe again."""
        self.broker.start()
        if self.service is not None:
            self._await_service(timeout)

    # ----- identities and addresses -------------------------------------------------------
    def thing(self, name: str, kind: str = "rsa") -> certs.Identity:
        """Register thing `name` and issue its device certificate (CN = name)."""
        if name == SERVICE_IDENTITY:
            raise ValueError(f"{name!r} is the Jobs service's identity; choose another thing name")
        try:
            self.engine.describe_thing(name)
        except ApiError:
            self.engine.create_thing(name)
        return self.broker.device(name, kind)

    @property
    def ca(self) -> certs.Identity:
        return self.broker.ca

    @property
    def port(self) -> int:
        return self.broker.port

    @property
    def control_url(self) -> str:
        return self.control.url

    @property
    def files_url(self) -> str:
        return self.file_server.url

    # ----- control plane (the same engine the HTTP endpoint uses) -------------------------
    def arn(self, kind: str, name: str) -> str:
        return self.engine.arn(kind, name)

    def create_job(self, job_id: str, document, things=(), groups=(), **options) -> dict:
        """CreateJob. `document`: dict or JSON text (or None with jobTemplateArn).

        options (AWS names or short forms): target_selection, timeout_minutes, retry
        ({"FAILED": n, "TIMED_OUT": n, "ALL": n}), presigned_expires, template (e.g.
        "AWS-Reboot"), parameters, description, or any CreateJob field as given to boto3.
        """
        body: dict = {
            "targets": [self.arn("thing", t) for t in things] + [self.arn("thinggroup", g) for g in groups]
        }
        if document is not None:
            body["document"] = document if isinstance(document, str) else json.dumps(document)
        short = {
            "target_selection": lambda v: {"targetSelection": v},
            "timeout_minutes": lambda v: {"timeoutConfig": {"inProgressTimeoutInMinutes": v}},
            "retry": lambda v: {
                "jobExecutionsRetryConfig": {
                    "criteriaList": [{"failureType": k, "numberOfRetries": n} for k, n in v.items()]
                }
            },
            "presigned_expires": lambda v: {
                "presignedUrlConfig": {"roleArn": "arn:aws:iam::123456789012:role/standin", "expiresInSec": v}
            },
            "template": lambda v: {"jobTemplateArn": f"arn:aws:iot:us-east-1::jobtemplate/{v}:1.0"},
            "parameters": lambda v: {"documentParameters": v},
        }
        for key, value in options.items():
            body.update(short[key](value) if key in short else {key: value})
        if "${aws:iot:s3-presigned-url:" in body.get("document", "") and "presignedUrlConfig" not in body:
            body.update(short["presigned_expires"](3600))
        return self.engine.create_job(job_id, body)

    def describe_job(self, job_id: str) -> dict:
        return self.engine.describe_job(job_id)["job"]

    def describe_execution(self, job_id: str, thing: str, execution_number=None) -> dict:
        return self.engine.describe_job_execution(job_id, thing, execution_number)["execution"]

    def cancel_job(self, job_id: str, force: bool = False, **body) -> dict:
        return self.engine.cancel_job(job_id, body, force)

    def cancel_execution(self, job_id: str, thing: str, force: bool = False, **body) -> dict:
        return self.engine.cancel_job_execution(job_id, thing, body, force)

    def delete_job(self, job_id: str, force: bool = False) -> dict:
        return self.engine.delete_job(job_id, force)

    def add_to_group(self, group: str, thing: str) -> None:
        self.engine.create_thing_group(group)
        self.engine.add_thing_to_group({"thingGroupName": group, "thingName": thing})

    def wait_terminal(self, job_id: str, thing: str, timeout: float = 10.0) -> dict:
        """The execution once terminal; TimeoutError naming its last status otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            execution = self.describe_execution(job_id, thing)
            if execution["status"] in TERMINAL:
                return execution
            if time.monotonic() > deadline:
                raise TimeoutError(f"{job_id} on {thing} still {execution['status']} after {timeout}s")
            time.sleep(0.02)

    # ----- settings and faults ------------------------------------------------------------
    def settings(self, **values) -> dict:
        """Change settings at run time (see store.DEFAULTS); the service applies them within 0.2 s."""
        if values:
            self.store.set(**values)
        return self.engine.refresh_settings()

    def set_faults(self, throttle_every: int = 0, internal_error_rate: float = 0.0,
                   duplicate_responses: bool = False, response_delay: float = 0.0) -> None:  # fmt: skip
        """Fault injection; all off by default (calling with no arguments clears them)."""
        self.settings(
            throttle_every=throttle_every,
            internal_error_rate=internal_error_rate,
            duplicate_responses=duplicate_responses,
            response_delay=response_delay,
        )
