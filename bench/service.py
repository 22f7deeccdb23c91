"""The stand-in's Jobs service with TCP_NODELAY on its broker connection, for benchmarks.

The service (tools/standin/service.py, paho) answers a request with several small publishes and
PUBACKs; without TCP_NODELAY the second write waits for the broker's delayed ACK (~40 ms on Linux
loopback), so every request would cost ~40 ms whatever the device does. Our device and the broker
(`set_tcp_nodelay true`) already set it. Everything else is the stand-in's own code.

    python -m bench.service --state DIR --port N
"""

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

from tools.standin import StandIn
from tools.standin.service import JobsService

ROOT = Path(__file__).resolve().parent.parent


class NoDelayService(JobsService):
    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        sock = client.socket()
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super()._on_connect(client, userdata, flags, reason, properties)


class BenchStandIn(StandIn):
    """StandIn whose service process is NoDelayService (nodelay=False: the stand-in as shipped)."""

    def __init__(self, folder, nodelay: bool = True, **settings):
        super().__init__(folder, **settings)
        self.nodelay = nodelay

    def start_service(self, timeout: float = 15.0) -> None:
        if not self.nodelay:
            return super().start_service(timeout)
        if self.service is not None and self.service.poll() is None:
            return
        self._ready.unlink(missing_ok=True)
        log = (self.folder / "service.log").open("a")
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        command = [
            sys.executable,
            "-m",
            "bench.service",
            "--state",
            str(self.folder),
            "--port",
            str(self.broker.port),
        ]
        self.service = subprocess.Popen(command, stdout=log, stderr=log, env=env, cwd=str(ROOT))
        log.close()
        self._await_service(timeout)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.service", description=__doc__.split("\n")[0])
    parser.add_argument("--state", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    NoDelayService(Path(args.state), args.port).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
