"""The control plane over HTTP, as boto3 and aws-cli call it with `--endpoint-url` (rest-json).

Requests signed for service `iot` (the SigV4 credential scope) are control-plane calls; those
signed for `iot-jobs-data` are the Jobs data plane (their paths collide).
Errors carry `x-amzn-ErrorType` and a `{"message": ...}` body, never a stack trace.
The signature itself is not checked: any credentials are accepted.
"""

import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from tools.standin import fleet, retained, templates
from tools.standin.core import ApiError, Rejected
from tools.standin.engine import Engine

_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")
_HTTP_OF = {
    "InvalidRequest": ("InvalidRequestException", 400),
    "InvalidJson": ("InvalidRequestException", 400),
    "ResourceNotFound": ("ResourceNotFoundException", 404),
    "InvalidStateTransition": ("InvalidStateTransitionException", 409),
    "VersionMismatch": ("InvalidStateTransitionException", 409),
    "TerminalStateReached": ("TerminalStateException", 410),
}


def _flag(query: dict, name: str) -> bool:
    return query.get(name, ["false"])[0].lower() == "true"


def _one(query: dict, name: str):
    return query.get(name, [None])[0]


def _page(items: list, key: str, query: dict) -> dict:
    """maxResults/nextToken paging; the token is the offset."""
    try:
        start = int(_one(query, "nextToken") or 0)
        size = int(_one(query, "maxResults") or 250)
    except ValueError:
        raise ApiError("InvalidRequestException", "nextToken and maxResults must be numbers") from None
    if not 1 <= size <= 250:
        raise ApiError("InvalidRequestException", "maxResults must be 1-250")
    page = {key: items[start : start + size]}
    if start + size < len(items):
        page["nextToken"] = str(start + size)
    return page


class ControlPlane:
    """Dispatch (method, path, query, body) to the engine; returns (status, payload)."""

    def __init__(self, engine: Engine, endpoint: str, issue=None):
        self.engine = engine
        self.endpoint = endpoint
        self.issue = issue  # (thing, kind) -> certs.Identity: registers the thing, issues its cert

    def call(self, service: str, method: str, path: str, query: dict, body: dict):
        self.engine.refresh_settings()
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        try:
            if service == "iot-jobs-data":
                return self._data_plane(method, parts, query, body)
            if service == "iotdata":
                return self._iot_data(method, parts, query)
            return self._iot(method, parts, query, body)
        except (AttributeError, TypeError, ValueError, KeyError) as err:
            # a field of the wrong shape (e.g. a string where AWS expects a map): AWS's answer
            print(f"control plane: {method} {path}: {err!r}", file=sys.stderr, flush=True)
            raise ApiError("InvalidRequestException", f"malformed request: {err}") from None

    def _iot(self, method, parts, query, body):
        e = self.engine
        route = (method, len(parts), parts[0] if parts else "")
        if route == ("GET", 1, "endpoint"):
            return {"endpointAddress": self.endpoint}
        if parts[:1] == ["standin"]:
            return self._extension(method, parts[1:], query, body)
        if parts[:1] == ["managed-job-templates"] and method == "GET":
            try:
                if len(parts) == 1:
                    return templates.list_managed(e.settings["region"])
                return templates.describe_managed(
                    parts[1], _one(query, "templateVersion"), e.settings["region"]
                )
            except templates.TemplateError as err:
                raise ApiError(err.error_type, str(err), err.status) from None
        if parts[:1] == ["jobs"]:
            if method == "GET" and len(parts) == 1:
                jobs = e.list_jobs(_one(query, "status"), _one(query, "targetSelection"),
                                   _one(query, "thingGroupName"))["jobs"]  # fmt: skip
                return _page(jobs, "jobs", query)
            job_id = parts[1] if len(parts) > 1 else ""
            if method == "PUT" and len(parts) == 2:
                return e.create_job(job_id, body)
            if method == "GET" and len(parts) == 2:
                return e.describe_job(job_id)
            if method == "DELETE" and len(parts) == 2:
                return e.delete_job(job_id, _flag(query, "force"))
            if method == "GET" and parts[2:] == ["job-document"]:
                return e.get_job_document(job_id, _flag(query, "beforeSubstitution"))
            if method == "PUT" and parts[2:] == ["cancel"]:
                return e.cancel_job(job_id, body, _flag(query, "force"))
            if method == "GET" and parts[2:] == ["things"]:
                found = e.list_executions_for_job(job_id, _one(query, "status"))["executionSummaries"]
                return _page(found, "executionSummaries", query)
        if parts[:1] == ["things"]:
            if method == "GET" and len(parts) == 1:
                return _page(e.list_things()["things"], "things", query)
            thing = parts[1] if len(parts) > 1 else ""
            if method == "POST" and len(parts) == 2:
                return e.create_thing(thing, body)
            if method == "GET" and len(parts) == 2:
                return e.describe_thing(thing)
            if method == "POST" and parts[2:] == ["connectivity-data"]:
                return e.get_thing_connectivity_data(thing)
            if method == "GET" and parts[2:] == ["jobs"]:
                found = e.list_executions_for_thing(thing, _one(query, "status"), _one(query, "jobId"))
                return _page(found["executionSummaries"], "executionSummaries", query)
            if len(parts) == 4 and parts[2] == "jobs" and method == "GET":
                number = _one(query, "executionNumber")
                return e.describe_job_execution(parts[3], thing, int(number) if number else None)
            if len(parts) == 5 and parts[2] == "jobs" and parts[4] == "cancel" and method == "PUT":
                return e.cancel_job_execution(parts[3], thing, body, _flag(query, "force"))
        if parts[:1] == ["streams"]:
            if method == "GET" and len(parts) == 1:
                ascending = _flag(query, "isAscendingOrder")
                return e.list_streams(_one(query, "maxResults"), _one(query, "nextToken"), ascending)
            stream = parts[1] if len(parts) == 2 else ""
            if method == "POST" and stream:
                return e.create_stream(stream, body)
            if method == "GET" and stream:
                return e.describe_stream(stream)
            if method == "PUT" and stream:
                return e.update_stream(stream, body)
            if method == "DELETE" and stream:
                return e.delete_stream(stream)
        if parts[:1] == ["otaUpdates"]:
            if method == "GET" and len(parts) == 1:
                return e.list_ota_updates(_one(query, "otaUpdateStatus"), _one(query, "maxResults"),
                                          _one(query, "nextToken"))  # fmt: skip
            update = parts[1] if len(parts) == 2 else ""
            if method == "POST" and update:
                return e.create_ota_update(update, body)
            if method == "GET" and update:
                return e.get_ota_update(update)
            if method == "DELETE" and update:
                return e.delete_ota_update(
                    update, _flag(query, "deleteStream"), _flag(query, "forceDeleteAWSJob")
                )
        if parts[:1] == ["thing-groups"] and len(parts) == 2:
            if method == "PUT" and parts[1] == "addThingToThingGroup":
                return e.add_thing_to_group(body)
            if method == "PUT" and parts[1] == "removeThingFromThingGroup":
                return e.remove_thing_from_group(body)
            if method == "POST":
                return e.create_thing_group(parts[1], body)
            if method == "GET":
                return e.describe_thing_group(parts[1])
        raise ApiError("UnknownOperationException", f"{method} /{'/'.join(parts)} is not served here", 404)

    def _extension(self, method, parts, query, body):
        """Stand-in only (not AWS): settings and faults, and things with their certificates."""
        if parts == ["fleet"] and method == "GET":
            return fleet.snapshot(self.engine)
        if parts == ["settings"] and method == "GET":
            return self.engine.store.settings()
        if parts == ["settings"] and method == "PUT":
            try:
                self.engine.store.set(**body)
            except ValueError as err:
                raise ApiError("InvalidRequestException", str(err)) from None
            return self.engine.refresh_settings()
        if len(parts) == 2 and parts[0] == "things" and method == "POST":
            if self.issue is None:
                raise ApiError("UnknownOperationException", "certificates are not issued here", 404)
            kind = _one(query, "kind") or "rsa"
            if kind not in ("rsa", "ec"):
                raise ApiError("InvalidRequestException", "kind must be rsa or ec")
            try:
                ident = self.issue(parts[1], kind)
            except ValueError as err:
                raise ApiError("InvalidRequestException", str(err)) from None
            return {
                "thingName": parts[1],
                "certificatePem": str(ident.cert_pem),
                "privateKeyPem": str(ident.key_pem),
                "certificateDer": str(ident.cert_der),
                "privateKeyDer": str(ident.key_der),
            }
        raise ApiError(
            "UnknownOperationException", f"{method} /standin/{'/'.join(parts)} is not served here", 404
        )

    def _iot_data(self, method, parts, query):
        """`iot-data` (signed for `iotdata`): the retained-message API."""
        if method == "GET" and parts == ["retainedMessage"]:
            return retained.list_retained(
                self.engine.store, _one(query, "nextToken"), _one(query, "maxResults")
            )
        if method == "GET" and len(parts) >= 2 and parts[0] == "retainedMessage":
            return retained.get_retained(self.engine.store, "/".join(parts[1:]))
        raise ApiError("UnknownOperationException", f"{method} /{'/'.join(parts)} is not served here", 404)

    def _data_plane(self, method, parts, query, body):
        """The HTTPS Jobs data plane, through the same engine as MQTT (jobDocument as a string)."""
        if len(parts) < 3 or parts[0] != "things" or parts[2] != "jobs":
            raise ApiError("UnknownOperationException", "not a Jobs data-plane path", 404)
        thing = parts[1]
        if len(parts) == 3 and method == "GET":
            topic, payload = f"$aws/things/{thing}/jobs/get", {}
        elif len(parts) == 4 and parts[3] == "$next" and method == "PUT":
            topic, payload = f"$aws/things/{thing}/jobs/start-next", body
        elif len(parts) == 4 and method == "GET":
            payload = {}
            if _one(query, "executionNumber"):
                payload["executionNumber"] = _one(query, "executionNumber")
            if _one(query, "includeJobDocument"):
                payload["includeJobDocument"] = _flag(query, "includeJobDocument")
            topic = f"$aws/things/{thing}/jobs/{parts[3]}/get"
        elif len(parts) == 4 and method == "POST":
            topic, payload = f"$aws/things/{thing}/jobs/{parts[3]}/update", body
        else:
            raise ApiError("UnknownOperationException", "not a Jobs data-plane operation", 404)
        payload = {k: v for k, v in payload.items() if k != "clientToken"}
        messages = self.engine.handle(topic, json.dumps(payload).encode())
        (answer_topic, answer), notifications = messages[0], messages[1:]
        if notifications:
            with self.engine.store.transaction() as db:
                self.engine.post(db, notifications)
        if answer_topic.endswith("/rejected"):
            error_type, status = _HTTP_OF.get(answer["code"], ("ServiceUnavailableException", 503))
            raise ApiError(error_type, answer["message"], status)
        answer.pop("timestamp", None)
        for holder in (answer.get("execution"), answer):
            if holder and "jobDocument" in holder:
                holder["jobDocument"] = json.dumps(holder["jobDocument"], separators=(",", ":"))
        return answer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _answer(self, status: int, payload: dict, error_type: str | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if error_type:
            self.send_header("x-amzn-ErrorType", error_type)
        self.end_headers()
        self.wfile.write(data)

    def _page(self) -> None:
        data = fleet.PAGE.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(data)

    def _events(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def write(data: bytes) -> None:
            self.wfile.write(data)
            self.wfile.flush()

        fleet.events(self.server.plane.engine, write, self.server.stopping)

    def _serve(self) -> None:
        url = urlsplit(self.path)
        if self.command == "GET" and url.path in ("/fleet", "/fleet/"):
            return self._page()
        if self.command == "GET" and url.path == "/standin/fleet/events":
            return self._events()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        scope = _SCOPE.search(self.headers.get("Authorization", ""))
        service = scope.group(1) if scope else "iot"
        try:
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError:
                raise ApiError("InvalidRequestException", "the request body is not valid JSON") from None
            if not isinstance(body, dict):
                raise ApiError("InvalidRequestException", "the request body must be a JSON object")
            result = self.server.plane.call(service, self.command, url.path, parse_qs(url.query), body)
            self._answer(200, result)
        except ApiError as err:
            self._answer(err.status, {"message": err.message}, err.error_type)
        except Rejected as err:
            self._answer(400, {"message": err.message}, "InvalidRequestException")
        except Exception as err:  # noqa: BLE001 - never a stack trace to the caller
            print(f"control plane: {self.command} {self.path}: {err!r}", file=sys.stderr, flush=True)
            self._answer(500, {"message": "internal error"}, "InternalFailureException")

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _serve


class ControlServer:
    """The HTTP endpoint in a thread on 127.0.0.1."""

    def __init__(self, engine: Engine, endpoint: str, port: int = 0, issue=None):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.plane = ControlPlane(engine, endpoint, issue)
        self.httpd.stopping = threading.Event()  # ends the fleet page's event streams
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def fleet_url(self) -> str:
        return f"{self.url}/fleet"

    def stop(self) -> None:
        self.httpd.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
