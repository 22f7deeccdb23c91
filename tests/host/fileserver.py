"""A local HTTPS file server for OTA tests: Range requests, injected faults, a request log.

Serves the files of one folder on 127.0.0.1 with a certificate from tools/certs.py.
Query parameters (any others, e.g. a presigned URL's X-Amz-*, are ignored):
    drop=N     close the connection once the body reaches byte N (once per distinct URL)
    status=S   answer with HTTP status S and no body
    norange=1  ignore Range and always send the whole file (200)
Every request is appended to <folder>/_requests.log as one JSON line:
    {"target": ..., "start": first byte sent, "sent": body bytes sent, "status": ...}
"""

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from tools import certs

_CHUNK = 16384


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def do_GET(self):  # noqa: N802 - http.server's naming
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        entry = {"target": self.path, "start": 0, "sent": 0, "status": 0}
        try:
            self._answer(parts, query, entry)
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            self.server.log(entry)

    def _answer(self, parts, query, entry):
        if "status" in query:
            entry["status"] = int(query["status"])
            self.send_response(entry["status"])
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            return
        path = (self.server.folder / unquote(parts.path).lstrip("/")).resolve()
        if self.server.folder not in path.parents or not path.is_file():
            entry["status"] = 404
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes=") and "norange" not in query:
            start = int(ranged[6:].split("-")[0])
        if start > len(data):
            entry["status"] = 416
            self.send_error(416)
            return
        entry["status"] = 206 if start else 200
        entry["start"] = start
        self.send_response(entry["status"])
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Connection", "close")
        self.end_headers()
        drop_at = len(data)
        if "drop" in query and self.server.first_drop(self.path):
            drop_at = max(start, int(query["drop"]))
        pos = start
        while pos < drop_at:
            end = min(pos + _CHUNK, drop_at)
            self.wfile.write(data[pos:end])
            entry["sent"] += end - pos
            pos = end
        self.wfile.flush()
        if drop_at < len(data):
            self.close_connection = True
            self.connection.shutdown(2)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, folder: Path, context: ssl.SSLContext):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.folder = folder.resolve()
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self._lock = threading.Lock()
        self._dropped: set[str] = set()

    def first_drop(self, target: str) -> bool:
        with self._lock:
            if target in self._dropped:
                return False
            self._dropped.add(target)
            return True

    def log(self, entry: dict) -> None:
        with self._lock, open(self.folder / "_requests.log", "a") as f:
            f.write(json.dumps(entry) + "\n")


class FileServer:
    """`FileServer(state_folder).start()` -> serves state_folder/files; `.port`, `.ca_der`, `.stop()`."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.files = self.folder / "files"
        self.port = 0
        self._server: _Server | None = None

    @property
    def ca_der(self) -> Path:
        return self.folder / "pki" / "ca.cert.der"

    def start(self) -> "FileServer":
        pki = self.folder / "pki"
        ca = certs.make_ca(pki, "ca")
        server = certs.make_server(ca, pki, "server")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(server.cert_pem, server.key_pem)
        self.files.mkdir(parents=True, exist_ok=True)
        self._server = _Server(self.files, context)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def requests(self) -> list[dict]:
        log = self.files / "_requests.log"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
