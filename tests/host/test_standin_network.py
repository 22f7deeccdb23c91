"""Where the stand-in listens: ports kept across restarts, and one more address for a chip on a LAN.

A LAN address is stood in for by 127.0.0.2: on Linux the whole 127.0.0.0/8 is local, so the
stand-in can listen there, put it in its server certificate and be dialled by that address
while the traffic never leaves the machine.
"""

import json
import socket
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import boto3
import pytest

from tests.host.e2e import Rig
from tools import certs
from tools.standin import StandIn
from tools.standin.device import Device
from tools.standin.standin import PortInUse

ROOT = Path(__file__).resolve().parent.parent.parent
LAN = "127.0.0.2"


def _ports(aws: StandIn) -> tuple:
    return aws.port, aws.control.port, aws.file_server.port


def test_ports_are_kept_and_the_provisioned_device_reconnects_after_a_restart(tmp_path):
    rig = Rig(tmp_path).start()
    try:
        device = rig.device("net-dev-1")
        assert device.run("before", {"operation": "diag.echo", "message": "one"})["status"] == "SUCCEEDED"
        first = _ports(rig.aws)
        facts = json.loads((rig.aws.folder / "standin.json").read_text())
        rig.aws.stop()  # the whole stand-in: broker, service, files, control plane

        rig.aws = device.aws = StandIn(rig.folder / "aws").start()  # no ports given
        assert _ports(rig.aws) == first
        again = json.loads((rig.aws.folder / "standin.json").read_text())
        assert (again["mqtt_port"], again["control_url"], again["files_url"]) == (
            facts["mqtt_port"],
            facts["control_url"],
            facts["files_url"],
        )
        # the device, provisioned for the first start's port, finds the broker again by itself
        assert device.run("after", {"operation": "diag.echo", "message": "two"})["status"] == "SUCCEEDED"
    finally:
        rig.stop()


def test_a_kept_port_held_by_another_process_is_named(tmp_path):
    with StandIn(tmp_path / "aws") as aws:
        port = aws.port
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        with pytest.raises(PortInUse, match=f"MQTT port {port} .* is in use"):
            StandIn(tmp_path / "aws").start()
        out = subprocess.run(
            [sys.executable, "-m", "tools.standin", "up", "--state", str(tmp_path / "aws")],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert out.returncode != 0
    assert f"MQTT port {port}" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    with StandIn(tmp_path / "aws", broker_port=0) as aws:  # 0: a new free port, kept from now on
        fresh = aws.port
    with StandIn(tmp_path / "aws") as aws:
        assert aws.port == fresh


def test_host_adds_a_listening_address_the_certificate_covers(tmp_path):
    with StandIn(tmp_path / "aws", host=LAN) as aws:
        assert aws.describe()["endpoint"] == LAN and aws.describe()["listen"] == ["127.0.0.1", LAN]
        assert {"localhost", "127.0.0.1", LAN} <= certs.server_names(aws.broker.server.cert_pem)
        conf = (aws.broker.folder / "mosquitto.conf").read_text()
        assert f"listener {aws.port} {LAN}" in conf and f"listener {aws.port} 127.0.0.1" in conf
        iot = boto3.client("iot", endpoint_url=aws.control_url, region_name="us-east-1",
                           aws_access_key_id="x", aws_secret_access_key="x")  # fmt: skip
        assert iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"] == LAN

        # a device dials the address, verifying the server certificate's name against it
        ident = aws.thing("net-lan-1", "ec")
        dev = Device("net-lan-1", aws.port, aws.ca.cert_pem, ident.cert_pem, ident.key_pem, host=LAN)
        dev.start()
        try:
            url = "${aws:iot:s3-presigned-url:https://s3.amazonaws.com/b/app.bin}"
            aws.create_job("lan-job", {"operation": "x", "url": url}, ["net-lan-1"], presigned_expires=60)
            (aws.files / "app.bin").write_bytes(b"served on the LAN address")
            execution = dev.request("start-next").payload["execution"]
            url = execution["jobDocument"]["url"]
            assert url.startswith(f"https://{LAN}:{aws.file_server.port}/app.bin?")
            context = ssl.create_default_context(cafile=str(aws.ca.cert_pem))
            with urllib.request.urlopen(url, context=context, timeout=10) as answer:
                assert answer.read() == b"served on the LAN address"
            done = dev.request("lan-job/update", {"status": "SUCCEEDED"})
            assert done.accepted
        finally:
            dev.close()

    # the address is kept: the next start without --host listens there again
    with StandIn(tmp_path / "aws") as aws:
        assert aws.describe()["listen"] == ["127.0.0.1", LAN]
    with StandIn(tmp_path / "aws", host="localhost") as aws:
        assert aws.describe()["listen"] == ["127.0.0.1"] and aws.describe()["endpoint"] == "localhost"


def test_the_simulated_firmware_connects_by_the_lan_address(tmp_path):
    rig = Rig(tmp_path, host=LAN).start()
    try:
        device = rig.device("net-lan-fw", endpoint=LAN)  # the TLS host name check is against an IP
        assert device.run("lan-fw", {"operation": "diag.echo", "message": "hi"})["status"] == "SUCCEEDED"
    finally:
        rig.stop()


def test_an_address_not_of_this_machine_is_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="not .*an address of this machine|cannot listen"):
        StandIn(tmp_path / "aws", host="192.0.2.1")  # TEST-NET-1: bound locally only, never dialled
    command = [sys.executable, "-m", "tools.standin", "up", "--state", str(tmp_path / "cli")]
    out = subprocess.run(
        command + ["--host", "192.0.2.1"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0 and "192.0.2.1" in out.stderr and "Traceback" not in out.stderr
