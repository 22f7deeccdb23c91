"""From zero to a job, as docs/tooling.md tells a user, with the virtual board and the local stand-in.

One walk through the user's commands (each run as the user runs it: make, aws-cli, mpremote):

1. the stand-in plays AWS: it registers the thing and issues its certificate (PEM files, as AWS
   hands them out); `aws iot describe-endpoint --endpoint-url …` names the endpoint;
2. `make provision` turns the PEM files into config.json and DER files;
3. `make vboard`'s board (tools/vboard.py) is the chip's serial side: `make deploy PORT=<pty>`
   copies the tree into its folder with the real mpremote;
4. the board's folder then boots as the device (tools/simdevice.py, deployed=True): the deployed
   main.py under the MicroPython Unix port, importing only the deployed .mpy files, plus
   umqtt.simple (standing in for the frozen one) and the host ussl shim;
5. `aws iot create-job --endpoint-url …` makes a gpio.write job and a system.reboot job, and
   `aws iot describe-job-execution` shows both SUCCEEDED.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tools.simdevice import SimDevice, deployed_micropypath
from tools.standin import StandIn
from tools.vboard import VirtualBoard

ROOT = Path(__file__).resolve().parents[2]
AWS = Path(sys.executable).parent / "aws"
THING = "deployed-esp32"


def run(command: list[str], env: dict | None = None, timeout: float = 60) -> str:
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def aws_cli(stand_in: StandIn, home: Path, *args: str) -> dict:
    """`aws --endpoint-url <control plane> iot …` with throw-away credentials; its JSON answer."""
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID="standin",
        AWS_SECRET_ACCESS_KEY="standin",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(home / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "credentials"),
    )
    out = run([str(AWS), "--endpoint-url", stand_in.control_url, "--output", "json", "iot", *args], env)
    return json.loads(out) if out.strip() else {}


def test_provision_deploy_boot_and_run_jobs_from_the_deployed_files(tmp_path):
    started = time.monotonic()
    marks = {}
    with StandIn(tmp_path / "standin") as stand_in, VirtualBoard(tmp_path / "board") as board:
        # 1. what AWS gives the user: the thing's certificate and key (PEM), the CA, the endpoint
        identity = stand_in.thing(THING)
        endpoint = aws_cli(stand_in, tmp_path, "describe-endpoint", "--endpoint-type", "iot:Data-ATS")
        assert endpoint == {"endpointAddress": "localhost"}

        # 2. make provision, with the PEM files
        config_dir = tmp_path / "provision"
        run(["make", "-s", "provision", f"THING={THING}", "ENDPOINT=localhost",
             f"CERT={identity.cert_pem}", f"KEY={identity.key_pem}", f"CA={stand_in.ca.cert_pem}",
             "BOARD=unix", f"PROVISION_ARGS=--port {stand_in.port} --out {config_dir}"])  # fmt: skip
        config = json.loads((config_dir / "config.json").read_text())
        assert (config["endpoint"], config["port"], config["board"]) == ("localhost", stand_in.port, "unix")
        marks["provision"] = time.monotonic()

        # 3. make deploy onto the virtual board: the real mpremote copies into its folder. No reset
        # at the end: the board's folder boots as the simulated device instead (below); two
        # processes on one folder would be two chips with one identity.
        out = run(["make", "-s", "deploy", f"PORT={board.port}", f"CONFIG={config_dir}",
                   "DEPLOY_ARGS=--no-reset"])  # fmt: skip
        assert "verified by sha256" in out
        board.stop()  # power off the serial side
        folder = board.root
        deployed = {"/" + p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        assert {"/main.py", "/boot.py", "/config.json", "/lib/board.mpy", "/lib/jobs/engine.mpy"} <= deployed
        assert not any(p.endswith(".py") for p in deployed if p.startswith("/lib/")), deployed
        assert not any("ussl" in p or "umqtt" in p for p in deployed), deployed
        marks["deploy"] = time.monotonic()

        # 4. boot the deployed tree; nothing on its path comes from the repository's lib/ or boards/
        path = deployed_micropypath(folder).split(":")
        assert str(folder / "lib") in path
        assert not any(p.startswith((str(ROOT / "lib"), str(ROOT / "boards"))) for p in path), path
        device = SimDevice(folder, deployed=True)
        assert device.command()[-1] == str(folder / "main.py")
        device.start()
        try:
            assert device.wait_for("engine: connected", timeout=20), device.output()
            marks["connected"] = time.monotonic()
            lib = str(folder / "lib")
            assert f"main: modules {lib}/board.mpy {lib}/jobs/config.mpy" in device.output(), device.output()

            # 5. jobs, created and watched with aws-cli against the stand-in's control plane
            arn = stand_in.arn("thing", THING)
            led_on = '{"operation": "gpio.write", "pin": "LED", "value": 1}'
            created = aws_cli(stand_in, tmp_path, "create-job", "--job-id", "led-on-1", "--targets", arn,
                              "--document", led_on)  # fmt: skip
            assert created["jobId"] == "led-on-1"
            aws_cli(stand_in, tmp_path, "create-job", "--job-id", "reboot-1", "--targets", arn,
                    "--document", '{"operation": "system.reboot"}')  # fmt: skip
            for job_id in ("led-on-1", "reboot-1"):
                stand_in.wait_terminal(job_id, THING, timeout=25)
            marks["jobs"] = time.monotonic()
            led = aws_cli(stand_in, tmp_path, "describe-job-execution", "--job-id", "led-on-1",
                          "--thing-name", THING)["execution"]  # fmt: skip
            reboot = aws_cli(stand_in, tmp_path, "describe-job-execution", "--job-id", "reboot-1",
                             "--thing-name", THING)["execution"]  # fmt: skip
        finally:
            device.stop()
        log = device.output()
        assert led["status"] == "SUCCEEDED", (led, log)
        assert reboot["status"] == "SUCCEEDED", (reboot, log)
        assert reboot["statusDetails"]["detailsMap"]["step"] == "rebooted", reboot
        # the LED really changed on the simulated board, and the reboot was a real new process
        assert (folder / "board_state" / "pins.log").read_text().split() == ["LED", "4", "0", "1"]
        assert device.exits[0] == 75 and device.boots == 2, log
        second_boot = log[log.index("--- boot 2 ---") :]
        assert f"main: modules {lib}/board.mpy {lib}/jobs/config.mpy" in second_boot, log
    timings = {
        step: round(at - started, 1) for step, at in marks.items()
    }  # seconds since the start, kept in the report
    print("timings (s since start):", timings, "total", round(time.monotonic() - started, 1))
    assert time.monotonic() - started < 60, timings


def test_without_the_deployed_library_the_device_does_not_boot(tmp_path):
    """The deployed runner's path holds no repository library: a tree without /lib cannot import jobs."""
    (tmp_path / "main.py").write_bytes((ROOT / "firmware" / "main.py").read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({"thing_name": "t", "endpoint": "localhost"}))
    device = SimDevice(tmp_path, deployed=True).start()
    try:
        assert device.wait_for("ImportError", timeout=10), device.output()
    finally:
        device.stop()
    assert "no module named 'jobs'" in device.output()
