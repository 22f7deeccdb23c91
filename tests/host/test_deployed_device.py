"""From zero to a job, with the commands docs/tooling.md shows ("Rehearsal without a chip or AWS").

Each step is the user's command, run as the user runs it (make, python -m, aws-cli, in their own
processes; Ctrl-C is SIGINT to the process group, as a terminal sends it). Only the folders
differ: the test's are temporary (`--state`, `VBOARD_ROOT=`, `--out`/`CONFIG=`), the docs use
the defaults.

1. `make standin`: the local stand-in plays AWS IoT; `python -m tools.standin create-thing`
   registers the thing and issues its certificate as PEM files, as AWS hands them out;
   `aws iot describe-endpoint --endpoint-url …` names the endpoint;
2. `make provision STANDIN=<its folder>` reads endpoint, port, CA and the thing's PEM files from
   the stand-in's standin.json and turns them into config.json and DER files;
3. `make vboard` is the chip's serial side: `make deploy PORT=<its pty> HANDLERS=…` copies the
   tree, with the user's handlers.py (the documented example), into its folder with the real mpremote;
4. Ctrl-C on the board, then `python -m tools.simdevice --deployed <its folder>` boots that tree
   as the device: the deployed main.py under the MicroPython Unix port, importing only the
   deployed .mpy files, plus umqtt.simple (standing in for the frozen one);
5. `aws iot create-job --endpoint-url …` makes a gpio.write, a system.reboot and a customJob job
   (the deployed handler's operation); `aws iot describe-job-execution` shows all three SUCCEEDED.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import boto3

from tools.simdevice import SimDevice, deployed_micropypath

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
THING = "rehearsal-esp32"  # not the real walk's my-esp32: its state/provision folder stays untouched
LED_ON = '{"operation": "gpio.write", "pin": "LED", "value": 1}'
REBOOT = '{"operation": "system.reboot"}'
CUSTOM = '{"operation": "customJob", "otherInfo": "someValue"}'
HANDLERS = "lib/jobs/ops/custom_example.py"
JOBS = ("led-on-1", "reboot-1", "custom-1")


def run(command: list[str], env: dict | None = None, timeout: float = 60) -> str:
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@contextmanager
def terminal(command: list[str], output: Path):
    """`command` running in its own terminal (process group); Ctrl-C on leaving."""
    with open(output, "w") as out:
        proc = subprocess.Popen(
            command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        ctrl_c(proc)


def ctrl_c(proc: subprocess.Popen, timeout: float = 15) -> int:
    """What Ctrl-C in its terminal does: SIGINT to the foreground process group."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def wait_for(path: Path, pattern: str, proc: subprocess.Popen, timeout: float = 20) -> re.Match:
    """The first match of `pattern` in the file `path` (a terminal's output), within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        found = re.search(pattern, text)
        if found:
            return found
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r} in {path}:\n{text}")


def aws_env(home: Path) -> dict:
    """Any credentials do for the stand-in; no ~/.aws file is read."""
    return dict(
        os.environ,
        AWS_ACCESS_KEY_ID="x",
        AWS_SECRET_ACCESS_KEY="x",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(home / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "aws-credentials"),
    )


def status(iot, job_id: str) -> str:
    return iot.describe_job_execution(jobId=job_id, thingName=THING)["execution"]["status"]


def test_standin_provision_deploy_boot_the_deployed_tree_and_run_jobs(tmp_path):
    started = time.monotonic()
    marks: dict[str, float] = {}
    state, board_root, config_dir = tmp_path / "standin", tmp_path / "vboard", tmp_path / "provision"
    env = aws_env(tmp_path)

    def aws(*args: str) -> dict:
        out = run([str(BIN / "aws"), "--endpoint-url", control, "iot", *args], env)
        return json.loads(out) if out.strip() else {}

    # 1. terminal 1: the stand-in; then what AWS gives the user: certificate, key, CA, endpoint
    with terminal(["make", "-s", "standin", f"STANDIN_ARGS=--state {state}"], tmp_path / "standin.out") as up:
        wait_for(tmp_path / "standin.out", "Ctrl-C to stop", up)
        marks["up"] = time.monotonic()
        facts = json.loads((state / "standin.json").read_text())
        control, mqtt_port = facts["control_url"], facts["mqtt_port"]
        out = run([sys.executable, "-m", "tools.standin", "create-thing", THING, "--state", str(state)])
        cert = re.search(r"certificate: (\S+\.pem) ", out).group(1)
        marks["thing"] = time.monotonic()
        assert aws("describe-endpoint", "--endpoint-type", "iot:Data-ATS") == {"endpointAddress": "localhost"}
        marks["standin"] = time.monotonic()

        # 2. make provision, with what the stand-in's standin.json says and the PEM files it issued
        run(["make", "-s", "provision", f"THING={THING}", f"STANDIN={state}", "BOARD=unix",
             f"PROVISION_ARGS=--out {config_dir}"])  # fmt: skip
        config = json.loads((config_dir / "config.json").read_text())
        assert (config["endpoint"], config["port"], config["board"]) == ("localhost", mqtt_port, "unix")
        issued = (Path(cert).with_suffix(".der")).read_bytes()
        assert (config_dir / "certs" / "device.cert.der").read_bytes() == issued
        marks["provision"] = time.monotonic()

        # 3. terminal 3: the virtual board; make deploy copies the tree into its folder (no reset:
        # the folder boots as the simulated device below, and one folder run by two processes
        # would be two chips with one identity)
        with terminal(
            ["make", "-s", "vboard", f"VBOARD_ROOT={board_root}"], tmp_path / "vboard.out"
        ) as vboard:
            pty = wait_for(tmp_path / "vboard.out", r"serial port (\S+)", vboard).group(1)
            out = run(["make", "-s", "deploy", f"PORT={pty}", f"CONFIG={config_dir}", f"HANDLERS={HANDLERS}",
                       "DEPLOY_ARGS=--no-reset"])  # fmt: skip
            assert "verified by sha256" in out, out
            assert (board_root / "handlers.py").read_bytes() == (ROOT / HANDLERS).read_bytes()
            ctrl_c(vboard)
        deployed = {"/" + p.relative_to(board_root).as_posix() for p in board_root.rglob("*") if p.is_file()}
        assert {
            "/main.py",
            "/boot.py",
            "/handlers.py",
            "/config.json",
            "/lib/board.mpy",
            "/lib/jobs/engine.mpy",
        } <= deployed
        assert not any(p.endswith(".py") for p in deployed if p.startswith("/lib/")), deployed
        assert not any("umqtt" in p for p in deployed), deployed
        marks["deploy"] = time.monotonic()

        # 4. the board's folder boots as the device: nothing on its path from the repository's lib/, boards/
        path = deployed_micropypath(board_root).split(":")
        assert str(board_root / "lib") in path
        assert not any(p.startswith((str(ROOT / "lib"), str(ROOT / "boards"))) for p in path), path
        log = board_root / "device.log"
        lib = board_root / "lib"
        loaded = f"main: modules {lib}/board.mpy {lib}/jobs/config.mpy"
        device_cmd = [sys.executable, "-m", "tools.simdevice", "--deployed", str(board_root)]
        with terminal(device_cmd, tmp_path / "device.out") as device:
            wait_for(log, "engine: connected", device)
            marks["connected"] = time.monotonic()

            # 5. jobs, created with aws-cli against the stand-in's control plane; watched with boto3
            # (the same DescribeJobExecution, without aws-cli's start-up time per poll), then aws-cli
            arn = f"arn:aws:iot:us-east-1:123456789012:thing/{THING}"
            assert aws("create-job", "--job-id", "led-on-1", "--targets", arn, "--document", LED_ON)["jobId"]
            assert aws("create-job", "--job-id", "reboot-1", "--targets", arn, "--document", REBOOT)["jobId"]
            assert aws("create-job", "--job-id", "custom-1", "--targets", arn, "--document", CUSTOM)["jobId"]
            iot = boto3.client("iot", endpoint_url=control, region_name="us-east-1",
                               aws_access_key_id="x", aws_secret_access_key="x")  # fmt: skip
            for job_id in JOBS:
                deadline = time.monotonic() + 20
                while status(iot, job_id) in ("QUEUED", "IN_PROGRESS"):
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.1)
            executions = {
                job_id: aws("describe-job-execution", "--job-id", job_id, "--thing-name", THING)["execution"]
                for job_id in JOBS
            }
            marks["jobs"] = time.monotonic()
        text = log.read_text()
        assert executions["led-on-1"]["status"] == "SUCCEEDED", (executions, text)
        assert executions["reboot-1"]["status"] == "SUCCEEDED", (executions, text)
        assert executions["reboot-1"]["statusDetails"]["detailsMap"]["step"] == "rebooted", executions
        # the user's handler, deployed as /handlers.py, ran the job
        assert executions["custom-1"]["status"] == "SUCCEEDED", (executions, text)
        assert executions["custom-1"]["statusDetails"]["detailsMap"] == {
            "otherInfo": "someValue",
            "handledBy": "customJob",
        }, executions
        # from the deployed files, at both boots; the LED really changed; the reboot was a new process
        first, second = text.split("--- boot 2 ---")
        assert loaded in first and loaded in second, text
        assert "--- exit 75 ---" in first, text
        assert (board_root / "simboard" / "pins.log").read_text().split() == ["LED", "4", "0", "1"]
        ctrl_c(up)
        assert "stopped" in (tmp_path / "standin.out").read_text()

    timings = {step: round(at - started, 1) for step, at in marks.items()}
    print("seconds since the start:", timings, "total", round(time.monotonic() - started, 1))
    assert time.monotonic() - started < 60, timings


# The rehearsal in docs/tooling.md, as shown there (default folders, placeholders as printed):
# the commands the walk above runs, in their documented form.
DOCUMENTED = [
    "make standin",
    f".venv/bin/python -m tools.standin create-thing {THING}",
    ".venv/bin/aws --endpoint-url $CONTROL iot describe-endpoint --endpoint-type iot:Data-ATS",
    f"make provision THING={THING} STANDIN=build/standin BOARD=unix",
    "make vboard",
    f"make deploy PORT=/dev/pts/N THING={THING} HANDLERS={HANDLERS} DEPLOY_ARGS=--no-reset",
    ".venv/bin/python -m tools.simdevice --deployed state/vboard",
    f".venv/bin/aws --endpoint-url $CONTROL iot create-job --job-id led-on-1 "
    f"--targets arn:aws:iot:us-east-1:123456789012:thing/{THING} --document '{LED_ON}'",
    f".venv/bin/aws --endpoint-url $CONTROL iot create-job --job-id reboot-1 "
    f"--targets arn:aws:iot:us-east-1:123456789012:thing/{THING} --document '{REBOOT}'",
    f".venv/bin/aws --endpoint-url $CONTROL iot create-job --job-id custom-1 "
    f"--targets arn:aws:iot:us-east-1:123456789012:thing/{THING} --document '{CUSTOM}'",
    f".venv/bin/aws --endpoint-url $CONTROL iot describe-job-execution --job-id led-on-1 "
    f"--thing-name {THING}",
]


def test_the_docs_show_the_commands_the_walk_runs():
    text = (ROOT / "docs" / "tooling.md").read_text()
    rehearsal = text[text.index("## Rehearsal without a chip or AWS") :]
    block = rehearsal[rehearsal.index("```sh") : rehearsal.index("```", rehearsal.index("```sh") + 5)]
    commands = [" ".join(line.split("#")[0].split()) for line in block.replace("\\\n", " ").splitlines()]
    missing = [c for c in DOCUMENTED if c not in commands]
    assert not missing, missing


def test_the_two_walks_provision_different_things():
    """The rehearsal must not overwrite the real device's state/provision/<thing> folder."""
    text = (ROOT / "docs" / "tooling.md").read_text()
    real = text[
        text.index("## From zero to a job on a real ESP32") : text.index("## Rehearsal without a chip or AWS")
    ]
    rehearsal = text[text.index("## Rehearsal without a chip or AWS") :]
    real_things = set(re.findall(r"make provision THING=(\S+)", real))
    rehearsal_things = set(re.findall(r"make provision THING=(\S+)", rehearsal))
    assert real_things and rehearsal_things and not real_things & rehearsal_things, (
        real_things,
        rehearsal_things,
    )


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


def test_simdevice_deployed_needs_a_deployed_tree(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    result = subprocess.run(
        [sys.executable, "-m", "tools.simdevice", "--deployed", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2
    assert "main.py not found: deploy to it first (make deploy)" in result.stderr
