"""fetch_deps refuses a download whose checksum does not match the pin."""

import http.server
import io
import json
import tarfile
import threading

import pytest

from tools import fetch_deps


@pytest.fixture
def index(monkeypatch):
    """A local simple index serving a tampered umqtt.simple 1.3.4 archive."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = b"print('tampered')\n"
        info = tarfile.TarInfo("micropython-umqtt.simple-1.3.4/umqtt/simple.py")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    archive_bytes = buffer.getvalue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.endswith(".tar.gz"):
                body = archive_bytes
            else:
                name = fetch_deps.PINS["micropython-umqtt-simple"][0]
                url = f"http://127.0.0.1:{server.server_port}/files/{name}"
                body = json.dumps({"files": [{"filename": name, "url": url}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{server.server_port}/simple")
    yield
    server.shutdown()


def test_a_checksum_mismatch_is_refused(index, tmp_path):
    with pytest.raises(SystemExit, match="does not match the pin"):
        fetch_deps.fetch("micropython-umqtt-simple", tmp_path)
    assert not (tmp_path / "umqtt" / "simple.py").exists()
