"""pytest plugin: tests under tests/device run inside MicroPython, on two runtimes.

Each `def test_*` in tests/device/test_*.py becomes a pytest item on the MicroPython Unix port
(64-bit), `test_x`, and one on the 32-bit WebAssembly MicroPython (tools/wasm, ESP32-sized
objects and the ESP32's 2^30 ms tick period), `test_x[wasm32]`. All selected items of one file
and runtime run in a single process (tests/mprunner.py) with lib/, boards/unix/ and the fetched
dependencies on MICROPYPATH; each is reported pass/fail/skip on its own, with MicroPython's
traceback on failure.

Header comments configure a file:
    # micropython: heapsize=64K      (-X heapsize=, to test memory limits)
    # micropython: timeout=120       (seconds for the whole file; default 120)
    # micropython: needs=broker      (host resources started once per session, passed as env)
    # micropython: wasm32=skip <why> (the file cannot run on the 32-bit runtime: its items skip)
A file whose `needs` include a network service (anything but `mpy`) is skipped on wasm32 too:
that runtime has no sockets. Either way each wasm32 item reports the reason.
"""

import ast
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tools import mpenv

ROOT = Path(__file__).resolve().parent.parent
DEVICE_TESTS = ROOT / "tests" / "device"
RUNNER = ROOT / "tests" / "mprunner.py"
_DIRECTIVE = re.compile(r"^#\s*micropython:\s*(\w+)\s*=\s*(\S.*?)\s*$")
WASM32 = "wasm32"
_FILE_NEEDS = ("mpy",)  # resources that are files, not network services: fine without sockets
_MARK = re.compile(r"^@@mptest (start|pass|fail|skip|end) (\S+)")


def micropypath() -> str:
    return mpenv.micropypath(DEVICE_TESTS)


def run_micropython(args, env=None, heapsize=None, timeout=120, cwd=None, runtime="unix"):
    """Run MicroPython (the Unix port, or runtime="wasm32") with the project's MICROPYPATH;
    return CompletedProcess."""
    if runtime == WASM32:
        command = mpenv.wasm_command()
        if command is None:
            raise MicroPythonFailure(
                "the wasm32 MicroPython (Node.js + build/wasm) is missing: run `make setup`"
            )
        command += ["--tree", str(ROOT / "boards")]  # tests import boards/esp32* by path
    else:
        command = [mpenv.micropython_binary()]
    if heapsize:
        command += ["-X", f"heapsize={heapsize}"]
    full_env = dict(os.environ, MICROPYPATH=micropypath(), **(env or {}))
    # errors="replace": a test may print what a hostile document holds (CESU-8, lone surrogates)
    return subprocess.run(
        command + list(args),
        env=full_env,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
        cwd=cwd,
    )


class _Resources:
    """Host services device tests ask for; started on first use, stopped at session end."""

    def __init__(self):
        self._env = {}
        self._stops = []
        self._tmp = None

    def folder(self) -> Path:
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="mptest-"))
        return self._tmp

    def env(self, names) -> dict:
        result = {}
        for name in names:
            if name not in self._env:
                self._env[name] = getattr(self, "_start_" + name)()
            result.update(self._env[name])
        return result

    def _start_broker(self) -> dict:
        from tools import certs
        from tools.broker import Broker

        broker = Broker(self.folder() / "broker")
        broker.prepare()
        for thing, kind in (("thing-rsa", "rsa"), ("thing-ec", "ec")):
            broker.device(thing, kind)
        other = certs.make_ca(self.folder() / "other", "ca")
        certs.make_device(other, self.folder() / "other", "thing-rsa")
        broker.start()
        self._stops.append(broker.stop)
        return {
            "MPTEST_BROKER_PORT": str(broker.port),
            "MPTEST_PKI": str(broker.folder / "pki"),
            "MPTEST_OTHER_PKI": str(self.folder() / "other"),
        }

    def _start_responder(self) -> dict:
        """A scripted Jobs service (tests/jobs_responder.py) on the broker, and device things."""
        from pathlib import Path as _Path

        from tests.jobs_responder import Responder
        from tools.broker import Broker

        broker_env = self.env(["broker"])
        broker = Broker(self.folder() / "broker")
        broker.prepare()
        for thing in ("engine-1", "engine-2", "engine-3"):
            broker.device(thing, "ec")
        responder = Responder(int(broker_env["MPTEST_BROKER_PORT"]), _Path(broker_env["MPTEST_PKI"])).start()
        self._stops.append(responder.stop)
        return {"MPTEST_RESPONDER_PORT": str(responder.control_port)}

    def _start_linkproxy(self) -> dict:
        """A TCP proxy to the broker that tests can freeze or cut (tests/linkproxy.py)."""
        from tests.linkproxy import LinkProxy

        broker_env = self.env(["broker"])
        proxy = LinkProxy(int(broker_env["MPTEST_BROKER_PORT"])).start()
        self._stops.append(proxy.stop)
        return {"MPTEST_PROXY_PORT": str(proxy.port), "MPTEST_PROXY_CONTROL": str(proxy.control_port)}

    def _start_mpy(self) -> dict:
        """Device modules compiled to .mpy, as the ESP32 loads them (no compiler heap peak).

        MPTEST_MPY_LIB: lib/ (tools.build). MPTEST_MPY: lib/, the fetched umqtt and the
        device-test helpers, for heap-limited tests that put them first on sys.path.
        """
        from tools.build import build, mpy_cross

        out = self.folder() / "mpy"
        build(out)
        compiler = mpy_cross()
        for name, top in (("deps", ROOT / "build" / "deps"), ("helpers", DEVICE_TESTS)):
            for source in sorted(top.rglob("*.py")):
                if name == "helpers" and source.name.startswith("test_"):
                    continue
                target = (out / name / source.relative_to(top)).with_suffix(".mpy")
                target.parent.mkdir(parents=True, exist_ok=True)
                subprocess.run([compiler, "-o", str(target), str(source)], check=True, capture_output=True)
        return {
            "MPTEST_MPY_LIB": str(out / "lib"),
            "MPTEST_MPY": ":".join(str(out / name) for name in ("lib", "deps", "helpers")),
        }

    def _start_ecdsa(self) -> dict:
        """ECDSA P-256 vectors (tests/ecdsa_vectors.py): keys made now, verdicts from OpenSSL."""
        from tests import ecdsa_vectors

        folder = self.folder() / "ecdsa"
        ecdsa_vectors.write(folder)
        return {"MPTEST_ECDSA": str(folder)}

    def _start_fileserver(self) -> dict:
        from tests.host.fileserver import FileServer

        server = FileServer(self.folder() / "fileserver").start()
        self._stops.append(server.stop)
        return {
            "MPTEST_FILES_PORT": str(server.port),
            "MPTEST_FILES_DIR": str(server.files),
            "MPTEST_FILES_CA": str(server.ca_der),
        }

    def _proxy(self, resource: str, name: str) -> dict:
        """A link proxy (tests/linkproxy.py) in front of MPTEST_<name>_PORT of `resource`:
        MPTEST_<name>_PROXY_PORT and MPTEST_<name>_PROXY_CONTROL."""
        from tests.linkproxy import LinkProxy

        proxy = LinkProxy(int(self.env([resource])[f"MPTEST_{name}_PORT"])).start()
        self._stops.append(proxy.stop)
        return {
            f"MPTEST_{name}_PROXY_PORT": str(proxy.port),
            f"MPTEST_{name}_PROXY_CONTROL": str(proxy.control_port),
        }

    def _start_filesproxy(self) -> dict:
        """In front of the HTTPS file server: TLS handshake faults."""
        return self._proxy("fileserver", "FILES")

    def _start_standin(self) -> dict:
        """The local AWS IoT stand-in (docs/standin.md) with a few things ready to connect.

        A test creates jobs over HTTP: PUT {MPTEST_STANDIN_CONTROL}/jobs/<id> with a CreateJob body
        (targets: thing ARNs arn:aws:iot:us-east-1:123456789012:thing/<name>); more things with
        POST /standin/things/<name>?kind=ec; settings (fast clock, faults) with PUT /standin/settings.
        """
        from tools.standin import StandIn

        aws = StandIn(self.folder() / "standin")
        aws.start()
        self._stops.append(aws.stop)
        things = ["mp-thing-1", "mp-thing-2", "mp-thing-3"]
        for thing in things:
            aws.thing(thing, "ec")
        aws.thing("mp-thing-rsa", "rsa")
        return {
            "MPTEST_STANDIN_PORT": str(aws.port),
            "MPTEST_STANDIN_PKI": str(aws.broker.folder / "pki"),
            "MPTEST_STANDIN_CONTROL": aws.control_url,
            "MPTEST_STANDIN_FILES": str(aws.files),
            "MPTEST_STANDIN_STATE": str(aws.folder),
            "MPTEST_STANDIN_THINGS": ",".join(things + ["mp-thing-rsa"]),
        }

    def _start_standinproxy(self) -> dict:
        """In front of the stand-in's broker."""
        return self._proxy("standin", "STANDIN")

    def stop(self):
        for stop in reversed(self._stops):
            stop()
        self._stops.clear()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


RESOURCES = _Resources()


def pytest_sessionfinish(session):
    RESOURCES.stop()


def pytest_pycollect_makemodule(module_path, parent):
    if DEVICE_TESTS in module_path.parents and module_path.name.startswith("test_"):
        return MicroPythonFile.from_parent(parent, path=module_path)
    return None


class MicroPythonFailure(Exception):
    """A test failed inside MicroPython; the message is its output and traceback."""


class MicroPythonFile(pytest.File):
    def collect(self):
        self.options = {"heapsize": None, "timeout": "120", "needs": "", WASM32: ""}
        source = self.path.read_text()
        for line in source.splitlines():
            match = _DIRECTIVE.match(line)
            if match:
                self.options[match.group(1)] = match.group(2)
        self._results = {}
        self.wasm32_skip = self._wasm32_skip()
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                yield MicroPythonItem.from_parent(self, name=node.name, lineno=node.lineno, runtime="unix")
                yield MicroPythonItem.from_parent(
                    self, name=node.name + "[" + WASM32 + "]", lineno=node.lineno, runtime=WASM32
                )

    def _needs(self) -> list:
        return [n for n in self.options["needs"].split(",") if n]

    def _wasm32_skip(self):
        """Why this file cannot run on the 32-bit runtime, or None."""
        word, _, reason = self.options[WASM32].partition(" ")
        if word == "skip":
            return reason.strip() or "the file says so"
        if word:
            raise self.CollectError(f"{self.path.name}: '# micropython: wasm32=skip <reason>' expected")
        services = [n for n in self._needs() if n not in _FILE_NEEDS]
        if services:
            return "needs " + ",".join(services) + ": the wasm32 runtime has no sockets"
        return None

    def results(self, runtime) -> dict:
        """Run every selected test of this file on `runtime` once; {name: (status, text)}."""
        if runtime not in self._results:
            names = [
                item.test_name
                for item in self.session.items
                if item.parent is self and item.runtime == runtime
            ]
            self._results[runtime] = self._run(names, runtime)
        return self._results[runtime]

    def _run(self, names, runtime) -> dict:
        timeout = float(self.options["timeout"])
        try:
            proc = run_micropython(
                [str(RUNNER), self.path.stem, *names],
                env=RESOURCES.env(self._needs()),
                heapsize=self.options["heapsize"],
                timeout=timeout,
                runtime=runtime,
            )
        except subprocess.TimeoutExpired as expired:
            out = (
                expired.stdout.decode(errors="replace")
                if isinstance(expired.stdout, bytes)
                else expired.stdout
            )
            return self._parse(out or "", f"micropython timed out after {timeout:.0f}s")
        return self._parse(proc.stdout, proc.stderr + f"\n(micropython exit status {proc.returncode})")

    @staticmethod
    def _parse(stdout: str, trailer: str) -> dict:
        results, current, status, lines = {}, None, None, []
        for line in stdout.splitlines():
            match = _MARK.match(line)
            if not match:
                lines.append(line)
                continue
            kind, name = match.groups()
            if kind == "start":
                current, status, lines = name, None, []
            elif kind == "end":
                results[name] = (status, "\n".join(lines))
                current = None
            else:
                status = kind
                if kind == "fail":
                    lines.append("--- MicroPython traceback ---")
        if current is not None:
            # the process died inside this test: report its output and the process's own words
            results[current] = ("fail", "\n".join(lines) + "\n" + trailer)
        results["*"] = ("fail", stdout[-4000:] + "\n" + trailer)
        return results


class MicroPythonItem(pytest.Item):
    def __init__(self, *, lineno, runtime, **kwargs):
        super().__init__(**kwargs)
        self.lineno = lineno
        self.runtime = runtime
        self.test_name = self.name.partition("[")[0]

    def runtest(self):
        if self.runtime == WASM32 and self.parent.wasm32_skip:
            pytest.skip("wasm32: " + self.parent.wasm32_skip)
        results = self.parent.results(self.runtime)
        status, text = results.get(self.test_name, (None, None))
        if status is None:
            raise MicroPythonFailure("the test did not report a result:\n" + results["*"][1])
        if status == "skip":
            reason = text.strip() or "skipped"
            pytest.skip(self.runtime + ": " + reason if self.runtime == WASM32 else reason)
        if status == "fail":
            raise MicroPythonFailure(text)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, MicroPythonFailure):
            where = "the 32-bit (wasm32) MicroPython" if self.runtime == WASM32 else "MicroPython"
            return f"{self.path.name}::{self.name} failed in {where}\n{excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, self.lineno - 1, f"{self.path.stem}::{self.test_name} [{self.runtime} micropython]"
