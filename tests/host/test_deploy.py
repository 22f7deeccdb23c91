"""`make deploy`: mpremote copies the device tree to the virtual board; files really land there."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools import certs, deploy, provision
from tools.vboard import VirtualBoard

ROOT = Path(__file__).resolve().parents[2]
MPREMOTE = str(Path(sys.executable).parent / "mpremote")
# how deploy's hints name mpremote when run from the repository: the venv's, e.g. .venv/bin/mpremote
TYPED_MPREMOTE = os.path.relpath(MPREMOTE, ROOT) if Path(MPREMOTE).is_relative_to(ROOT) else MPREMOTE


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("provision")
    ca = certs.make_ca(folder / "pki", "ca")
    device = certs.make_device(ca, folder / "pki", "thing-1")
    inputs = provision.Inputs(
        thing="thing-1",
        endpoint="localhost",
        cert=device.cert_pem,
        key=device.key_pem,
        ca=ca.cert_pem,
        board="unix",
    )
    provision.provision(inputs, folder / "out")
    return folder / "out"


@pytest.fixture
def board(tmp_path):
    with VirtualBoard(tmp_path / "board") as vb:
        yield vb


def board_files(board) -> dict[str, bytes]:
    return {
        "/" + p.relative_to(board.root).as_posix(): p.read_bytes()
        for p in board.root.rglob("*")
        if p.is_file()
    }


def mpremote_exec(board, code: str) -> str:
    result = subprocess.run(
        [MPREMOTE, "connect", board.port, "exec", code], capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_deploy_lands_every_file_and_skips_unchanged_ones(board, config_dir, tmp_path):
    first = deploy.deploy(board.port, config_dir, out=tmp_path / "stage")
    tree = first["tree"]
    on_board = board_files(board)
    assert set(on_board) == set(tree)
    for path, local in tree.items():
        assert on_board[path] == local.read_bytes(), path
    assert on_board["/config.json"] == (config_dir / "config.json").read_bytes()
    assert on_board["/certs/device.key.der"] == (config_dir / "certs" / "device.key.der").read_bytes()
    assert "/boot.py" in tree
    library = sorted(p for p in tree if p.startswith("/lib/"))
    assert library and all(p.endswith(".mpy") for p in library)
    assert "/lib/jobs/__init__.mpy" in library
    assert not any("umqtt" in p for p in tree)
    assert first["copied"] == sorted(tree) and first["unchanged"] == []

    deadline = time.monotonic() + 10
    while board.resets < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert board.resets == 1, "the board is reset after the deploy"

    second = deploy.deploy(board.port, config_dir, out=tmp_path / "stage", reset=False)
    assert second["copied"] == [] and second["unchanged"] == sorted(tree)


def test_the_deployed_tree_boots_and_imports_jobs_from_mpy(board, config_dir, tmp_path):
    deploy.deploy(board.port, config_dir, out=tmp_path / "stage", reset=False)
    output = mpremote_exec(
        board,
        "import json, jobs, jobs.tls\n"
        "c = json.load(open('config.json'))\n"
        "print(jobs.__file__, jobs.tls.__file__, c['thing_name'], len(open(c['cert'], 'rb').read()))",
    )
    cert_size = (config_dir / "certs" / "device.cert.der").stat().st_size
    assert output.split() == ["/lib/jobs/__init__.mpy", "/lib/jobs/tls.mpy", "thing-1", str(cert_size)]


@pytest.fixture
def project(tmp_path):
    """A small project tree with an ESP32-like board folder, for the board-file rules."""
    root = tmp_path / "project"
    files = {
        "lib/jobs/__init__.py": "VERSION = 1\n",
        "lib/jobs/ops/__init__.py": "",
        "boards/esp32/board.py": "from espboard import EspBoard\nimport pins\n",
        "boards/esp32/espboard.py": "import machine\nclass EspBoard:\n    pass\n",
        "boards/esp32/pins.py": "LED = 2\n",
        "boards/esp32s3/board.py": "from espboard import EspBoard\n",
        "boards/esp32c3/board.py": "from espboard import EspBoard\n",
        "boards/unix/board.py": "import os\n",
        "firmware/boot.py": "# boot\n",
        "firmware/main.py": "import board\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "tools").mkdir()
    shutil.copy(ROOT / "tools" / "boardfiles.py", root / "tools")
    return root


def test_board_modules_compiled_into_lib_entry_points_as_source(board, config_dir, project, tmp_path):
    result = deploy.deploy(board.port, config_dir, "esp32", tmp_path / "stage", reset=False, root=project)
    assert sorted(result["tree"]) == [
        "/boot.py",
        "/certs/ca.cert.der",
        "/certs/device.cert.der",
        "/certs/device.key.der",
        "/config.json",
        "/lib/board.mpy",
        "/lib/espboard.mpy",
        "/lib/jobs/__init__.mpy",
        "/lib/jobs/ops/__init__.mpy",
        "/lib/pins.mpy",
        "/main.py",
    ]
    assert (board.root / "main.py").read_text() == "import board\n"
    assert (board.root / "lib" / "board.mpy").read_bytes()[:2] == b"M\x06"

    (project / "lib" / "jobs" / "__init__.py").write_text("VERSION = 2\n")
    again = deploy.deploy(board.port, config_dir, "esp32", tmp_path / "stage", reset=False, root=project)
    assert again["copied"] == ["/lib/jobs/__init__.mpy"]
    assert mpremote_exec(board, "import jobs; print(jobs.VERSION)").strip() == "2"


def test_unix_board_ships_only_its_own_board_module(config_dir, project, tmp_path):
    tree = deploy.stage(config_dir, "unix", tmp_path / "stage", root=project)
    assert [p for p in tree if p.startswith("/lib/") and not p.startswith("/lib/jobs/")] == ["/lib/board.mpy"]


def test_a_board_gets_the_modules_it_imports_from_a_sibling_board(config_dir, project, tmp_path):
    tree = deploy.stage(config_dir, "esp32s3", tmp_path / "stage", root=project)
    assert sorted(p for p in tree if p.startswith("/lib/") and "jobs" not in p) == [
        "/lib/board.mpy",
        "/lib/espboard.mpy",
    ]
    compiled_board = tree["/lib/board.mpy"].read_bytes()
    assert b"esp32s3/board.py" in compiled_board, "the S3's own board.py, not the ESP32's"


def run_deploy_cli(board, config_dir, *extra):
    return subprocess.run(
        [sys.executable, "-m", "tools.deploy", "--port", board.port, "--config", str(config_dir), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_stale_lib_umqtt_is_refused_then_removed_on_request(board, config_dir):
    stale = board.root / "lib" / "umqtt"
    stale.mkdir(parents=True)
    (stale / "simple.py").write_text("# an old copy\n")
    refused = run_deploy_cli(board, config_dir, "--no-reset")
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    assert "the board has /lib/umqtt, which the frozen umqtt.simple shadows" in refused.stderr
    assert f"`{TYPED_MPREMOTE} connect {board.port} rm -r :/lib/umqtt`" in refused.stderr
    assert not (board.root / "config.json").exists(), "nothing is copied when refused"

    fixed = run_deploy_cli(board, config_dir, "--no-reset", "--remove-stale")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "removed /lib/umqtt" in fixed.stdout
    assert not stale.exists() and (board.root / "config.json").exists()


def test_py_file_shadowing_a_deployed_mpy_is_refused(board, config_dir):
    old = board.root / "lib" / "jobs" / "tls.py"
    old.parent.mkdir(parents=True)
    old.write_text("# stale source\n")
    refused = run_deploy_cli(board, config_dir, "--no-reset")
    assert refused.returncode == 2
    assert "the board has /lib/jobs/tls.py, which MicroPython imports before the .mpy" in refused.stderr


def test_micropython_older_than_1_23_is_refused():
    """The virtual board runs v1.29, so the version rule is checked on the probe's answer."""
    device = deploy.parse_probe("noise\nDEPLOY-PROBE [(1, 22, 2), False, [], 'esp32']\n")
    problems, stale = deploy.device_problems(device, {}, "/dev/ttyUSB0")
    assert problems == [
        "the board runs MicroPython v1.22.2; v1.23 or later is needed (TLS via the ssl/tls modules, "
        "frozen umqtt.simple >= 1.4): flash a current firmware, `make flash` (docs/tooling.md)"
    ]
    assert stale == []
    current = deploy.parse_probe("DEPLOY-PROBE [(1, 23, 0), False, [], 'esp32']")
    assert deploy.device_problems(current, {}, "/dev/ttyUSB0") == ([], [])


def test_missing_provisioning_is_named(board, tmp_path):
    result = run_deploy_cli(board, tmp_path / "nothing-here")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "cannot read it" in result.stderr and "run `make provision` first" in result.stderr


def test_package_json_lists_every_library_module():
    """package.json (for `mpremote mip install github:<owner>/<repo>`) must follow lib/jobs."""
    committed = (ROOT / "package.json").read_text()
    assert committed == deploy.package_json_text(), (
        "package.json is out of date with lib/jobs: run `python -m tools.deploy --write-package-json`"
    )
    sources = {p.relative_to(ROOT / "lib").as_posix() for p in (ROOT / "lib" / "jobs").rglob("*.py")}
    assert {target for target, _ in deploy.package_json()["urls"]} == sources


def test_mip_installs_the_library_from_package_json(board):
    """The same package.json, installed by mip from a local path (github: needs the internet)."""
    result = subprocess.run(
        [MPREMOTE, "connect", board.port, "mip", "install", str(ROOT / "package.json")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for target, source in deploy.package_json()["urls"]:
        assert (board.root / "lib" / target).read_bytes() == (ROOT / source).read_bytes()
    assert mpremote_exec(board, "import jobs.tls; print(jobs.tls.__file__)").strip() == "/lib/jobs/tls.py"


def run_manifest(folder: Path, board_name: str, monkeypatch) -> list[tuple]:
    """Execute manifest.py as MicroPython's manifestfile.py does: in its folder, with its API."""
    calls = []

    def api(name):
        return lambda *args, **kwargs: calls.append((name, args, kwargs))

    scope = {name: api(name) for name in ("include", "package", "module", "require", "metadata")}
    monkeypatch.setenv("JOBS_BOARD", board_name)
    monkeypatch.chdir(folder)
    exec((ROOT / "manifest.py").read_text(), scope)
    return calls


def test_manifest_freezes_the_library_and_the_board_modules(project, monkeypatch):
    calls = run_manifest(project, "esp32", monkeypatch)
    assert calls == [
        ("include", ("$(PORT_DIR)/boards/manifest.py",), {}),
        ("package", ("jobs",), {"base_path": "lib"}),
        ("module", ("board.py",), {"base_path": "boards/esp32"}),
        ("module", ("espboard.py",), {"base_path": "boards/esp32"}),
        ("module", ("pins.py",), {"base_path": "boards/esp32"}),
    ]
    calls = run_manifest(project, "esp32s3", monkeypatch)
    assert calls[2:] == [
        ("module", ("board.py",), {"base_path": "boards/esp32s3"}),
        ("module", ("espboard.py",), {"base_path": "boards/esp32"}),
    ]
    assert (project / "lib" / "jobs" / "__init__.py").is_file()


def test_manifest_of_this_repository(monkeypatch):
    calls = run_manifest(ROOT, "unix", monkeypatch)
    assert ("package", ("jobs",), {"base_path": "lib"}) in calls
    assert (ROOT / "lib" / "jobs" / "__init__.py").is_file()
    assert not any("umqtt" in str(args) for _, args, _ in calls)
    with pytest.raises(ValueError, match="JOBS_BOARD=nosuch: there is no folder boards/nosuch"):
        run_manifest(ROOT, "nosuch", monkeypatch)


def test_frozen_library_firmware_gets_only_entry_points_and_config(config_dir, project, tmp_path):
    tree = deploy.stage(config_dir, "esp32", tmp_path / "stage", root=project, frozen_library=True)
    assert sorted(tree) == [
        "/boot.py",
        "/certs/ca.cert.der",
        "/certs/device.cert.der",
        "/certs/device.key.der",
        "/config.json",
        "/main.py",
    ]


def test_make_provision_then_make_deploy_as_in_docs_tooling(board, tmp_path):
    """The two commands of docs/tooling.md, run as written there (on the virtual board)."""
    thing = "vboard-docs-check"
    pki = tmp_path / "pki"
    ca = certs.make_ca(pki, "ca")
    device = certs.make_device(ca, pki, thing)
    state = ROOT / "state" / "provision" / thing
    try:
        provisioned = subprocess.run(
            [
                *("make", "-s", "provision", f"THING={thing}", "ENDPOINT=localhost"),
                *(f"CERT={device.cert_pem}", f"KEY={device.key_pem}", f"CA={ca.cert_pem}", "BOARD=unix"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert provisioned.returncode == 0, provisioned.stdout + provisioned.stderr
        assert f"make deploy PORT=<serial port> CONFIG={state}" in provisioned.stdout
        deployed = subprocess.run(
            ["make", "-s", "deploy", f"PORT={board.port}", f"THING={thing}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert "verified by sha256" in deployed.stdout and "board reset" in deployed.stdout
        assert (board.root / "config.json").read_bytes() == (state / "config.json").read_bytes()
    finally:
        shutil.rmtree(state, ignore_errors=True)


@pytest.mark.parametrize("board_name, arch", [("esp32", 10), ("esp32s3", 10), ("esp32c3", 11)])
def test_native_code_is_compiled_for_the_boards_architecture(config_dir, project, tmp_path, board_name, arch):
    """Bytecode .mpy runs on any chip; @micropython.native needs -march (xtensawin 10, rv32imc 11)."""
    (project / "lib" / "jobs" / "fast.py").write_text("@micropython.native\ndef f(x):\n    return x + 1\n")
    tree = deploy.stage(config_dir, board_name, tmp_path / "stage", root=project)
    header = tree["/lib/jobs/fast.mpy"].read_bytes()[:3]
    assert header[:2] == b"M\x06" and header[2] >> 2 == arch


def test_native_code_for_an_unknown_board_is_named(config_dir, project, tmp_path):
    (project / "lib" / "jobs" / "fast.py").write_text(
        "@micropython.viper\ndef f(x: int) -> int:\n    return x\n"
    )
    (project / "boards" / "pyboard").mkdir()
    with pytest.raises(deploy.DeployError, match="native code needs an -march for board 'pyboard'"):
        deploy.stage(config_dir, "pyboard", tmp_path / "stage", root=project)


def test_a_port_that_does_not_exist_is_named_before_anything_is_built(config_dir, tmp_path):
    with pytest.raises(deploy.DeployError, match="serial port /dev/no-such-port does not exist"):
        deploy.deploy("/dev/no-such-port", config_dir, out=tmp_path / "stage")
    assert not (tmp_path / "stage").exists()
    result = subprocess.run(
        [sys.executable, "-m", "tools.deploy", "--port", "/dev/no-such-port", "--config", str(config_dir)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "deploy: serial port /dev/no-such-port does not exist: is the board plugged in? "
        f"(`{TYPED_MPREMOTE} devs` lists the ports)"
    ]


def test_a_port_that_is_no_board_is_named_before_anything_is_built(config_dir, tmp_path):
    with pytest.raises(deploy.DeployError, match="mpremote exec on /dev/null failed"):
        deploy.deploy("/dev/null", config_dir, out=tmp_path / "stage")
    assert not (tmp_path / "stage").exists()


def test_the_staging_folder_keeps_the_secrets_to_its_owner(config_dir, tmp_path):
    out = tmp_path / "stage"
    tree = deploy.stage(config_dir, "unix", out)
    assert out.stat().st_mode & 0o777 == 0o700
    for path in ("/config.json", "/certs/device.key.der"):
        assert tree[path].stat().st_mode & 0o777 == 0o600, path
        assert tree[path].read_bytes() == (config_dir / path.lstrip("/")).read_bytes()
    assert tree["/certs/device.cert.der"].stat().st_mode & 0o077 != 0, "a certificate is no secret"


def test_make_clean_removes_the_staging_folder():
    """deploy stages in build/deploy/<board>; `make clean` removes that folder (read from its recipe)."""
    recipe = subprocess.run(["make", "-n", "clean"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    removed = {
        word.rstrip("/")
        for line in recipe.stdout.splitlines()
        if line.startswith("rm ")
        for word in line.split()
    }
    assert deploy.staging_folder("esp32").parent.relative_to(ROOT).as_posix() in removed, recipe.stdout


# ---- the user's handlers.py ----

HANDLER = """from jobs import ops


class Blink(ops.Op):
    name = "user.blink"
    params = (ops.Param("times", ops.INT, lo=1, hi=10),)

    def run(self, job):
        return {"blinked": str(job.doc["times"])}


ops.register(Blink())
"""


def test_handlers_py_is_deployed_to_the_device_root_and_redeployed_when_edited(board, config_dir, tmp_path):
    handlers = tmp_path / "handlers.py"
    handlers.write_text(HANDLER)
    first = deploy.deploy(board.port, config_dir, out=tmp_path / "stage", reset=False, handlers=handlers)
    assert (board.root / "handlers.py").read_text() == HANDLER
    assert "/handlers.py" in first["copied"]
    # the board imports it from its root, as main.py does at boot
    output = mpremote_exec(
        board, "import handlers; from jobs import ops; print(handlers.__file__, ops.find('user.blink').name)"
    )
    assert output.split() == ["handlers.py", "user.blink"]

    handlers.write_text(HANDLER.replace('"blinked"', '"flashed"'))
    again = deploy.deploy(board.port, config_dir, out=tmp_path / "stage", reset=False, handlers=handlers)
    assert again["copied"] == ["/handlers.py"]
    assert '"flashed"' in (board.root / "handlers.py").read_text()


def test_a_handlers_py_that_does_not_compile_is_named_with_its_line_and_nothing_is_copied(
    board, config_dir, tmp_path
):
    handlers = tmp_path / "handlers.py"
    handlers.write_text(HANDLER.replace("def run(self, job):", "def run(self, job)"))
    result = run_deploy_cli(board, config_dir, "--no-reset", "--handlers", str(handlers))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"deploy: {handlers} does not compile, line 8: SyntaxError: invalid syntax "
        "(mpy-cross; nothing was copied)"
    ]
    assert not any(board.root.iterdir()), "nothing reached the board"


def test_a_handlers_file_that_does_not_exist_is_named(config_dir, tmp_path):
    with pytest.raises(deploy.DeployError, match="handlers file .*nothing.py does not exist"):
        deploy.deploy("/dev/no-such-port", config_dir, handlers=tmp_path / "nothing.py")


def test_after_deploy_the_board_boots_main_from_the_deployed_files(board, config_dir, project, tmp_path):
    """The reset at the end of a deploy runs the deployed main.py, which imports the deployed .mpy."""
    (project / "firmware" / "main.py").write_text(
        "import json, jobs, board\n"
        "c = json.load(open('config.json'))\n"
        "open('booted.txt', 'w').write(' '.join((c['thing_name'], jobs.__file__, board.__file__)))\n"
    )
    deploy.deploy(board.port, config_dir, "esp32s3", tmp_path / "stage", root=project)
    booted = board.root / "booted.txt"
    deadline = time.monotonic() + 10
    while not (booted.exists() and booted.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert booted.read_text() == "thing-1 /lib/jobs/__init__.mpy /lib/board.mpy"
