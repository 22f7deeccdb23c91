"""HTTPS file server standing in for S3 presigned URLs.

Files are served from a folder the user or a test fills. A request must carry a signature the
Jobs service issued for that key and that has not expired (as a presigned URL), and may ask for
a byte range (`Range: bytes=a-b`, `a-`, `-n`), answered with 206 and Content-Range.
"""

import hashlib
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from tools.standin.store import Store, now


def _within(folder: Path, key: str) -> Path | None:
    path = (folder / key).resolve()
    return path if folder.resolve() in path.parents and path.is_file() else None


def locate(settings: dict, key: str) -> Path:
    """The file of the files folder an S3 key names (the bucket is not kept); FileNotFoundError."""
    path = _within(Path(settings["files_folder"]), key)
    if path is None:
        raise FileNotFoundError(key)
    return path


def file_digest(path: Path, algorithm: str) -> bytes:
    """The `hashlib` digest of a whole file, read in pieces."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with Path(path).open("rb") as src:
        while chunk := src.read(65536):
            digest.update(chunk)
    return digest.digest()


def read_text(settings: dict, key: str) -> str:
    """A file of the files folder as text (for CreateJob's documentSource)."""
    return locate(settings, key).read_text()


def _error(code: str, message: str) -> bytes:
    text = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    return ("<?xml version='1.0' encoding='UTF-8'?>" + text).encode()


class _Handler(BaseHTTPRequestHandler):
    server_version = "AmazonS3"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _fail(self, status: int, code: str, message: str) -> None:
        body = _error(code, message)
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        key = unquote(url.path.lstrip("/"))
        token = parse_qs(url.query).get("X-Amz-Signature", [""])[0]
        row = (
            self.server.store.read()
            .execute("SELECT path, expires FROM presigned WHERE token = ?", (token,))
            .fetchone()
        )
        if row is None or row["path"] != key:
            return self._fail(403, "SignatureDoesNotMatch", "The request signature is not valid")
        if row["expires"] < now():
            return self._fail(403, "AccessDenied", "Request has expired")
        path = _within(self.server.folder, key)
        if path is None:
            return self._fail(404, "NoSuchKey", "The specified key does not exist.")
        size = path.stat().st_size
        start, end, status = 0, size - 1, 200
        spec = self.headers.get("Range")
        if spec:
            parsed = _parse_range(spec, size)
            if parsed is None:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, end = parsed
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1 if size else 0))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD" or not size:
            return
        with path.open("rb") as src:
            src.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = src.read(min(65536, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)


def _parse_range(spec: str, size: int):
    """(start, end) inclusive for one `bytes=` range, or None when unsatisfiable."""
    if not spec.startswith("bytes=") or "," in spec:
        return None
    first, _, last = spec[6:].strip().partition("-")
    try:
        if first == "":
            length = int(last)
            if length <= 0 or size == 0:
                return None
            return max(0, size - length), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


class FileServer:
    """The HTTPS server in a thread per listening address (one port); `url` is its base address."""

    def __init__(self, folder: Path, store: Store, cert: Path, key: Path, port: int = 0,
                 addresses=("127.0.0.1",), host: str = "localhost"):  # fmt: skip
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.host = host
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        self.servers: list = []
        try:
            for address in addresses:
                httpd = ThreadingHTTPServer((address, port), _Handler)
                port = httpd.server_address[1]  # the others listen on the first one's port
                self.servers.append(httpd)
                httpd.daemon_threads = True
                httpd.socket = context.wrap_socket(
                    httpd.socket, server_side=True, do_handshake_on_connect=False
                )
                httpd.folder = self.folder
                httpd.store = store
        except BaseException:
            self.stop()
            raise
        self.port = port
        for httpd in self.servers:
            threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def stop(self) -> None:
        for httpd in self.servers:
            httpd.shutdown()
            httpd.server_close()
        self.servers = []
