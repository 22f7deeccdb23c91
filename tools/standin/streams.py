"""MQTT-based file delivery, the device side: DescribeStream and GetStream (JSON).

    $aws/things/<thing>/streams/<streamId>/describe/json  ->  .../description/json
    $aws/things/<thing>/streams/<streamId>/get/json       ->  .../data/json (one message per block)
    any error                                              ->  .../rejected/json

DescribeStream `{"c"}` answers `{"c", "s": version, "d": description, "r": [{"f": fileId,
"z": size}]}`. GetStream `{"c", "s", "f", "l", "o", "n", "b"}` answers one `{"c", "f", "l", "i",
"p"}` per block: block `i` is bytes `i*l .. i*l+l-1` of the file, `p` base64. Without a bitmap
the blocks are `o .. o+n-1` (`n` defaults to 131072 / l); with `b` (hex, block `o + 8*j + k`
for bit k, least significant first, of byte j) the set bits, at most `n` of them. One request
is answered with at most 128 KiB of blocks, as AWS does; the device asks again for the rest.
Errors `{"o": code, "m": message, "c"}` use every code AWS documents for streams: InvalidTopic,
InvalidJson, InvalidCbor (CBOR topics are not served: see docs/standin.md), InvalidRequest,
Unauthorized, BlockSizeOutOfBounds, OffsetOutOfBounds, BlockCountLimitExceeded,
BlockBitmapLimitExceeded, ResourceNotFound, VersionMismatch, ETagMismatch, InternalError.
A thing reaches only its own stream topics: the broker's ACL (`tools/broker.py`).
"""

import base64
import json
import sys

from tools.standin import files
from tools.standin.store import Store

MIN_BLOCK, MAX_BLOCK = 256, 131072
MAX_OFFSET = MAX_BLOCKS = 98304
MAX_BITMAP = 12288
PER_REQUEST = 131072
_REQUESTS = {"describe": "description", "get": "data"}
_ANSWERS = ("description", "data", "rejected")


class StreamError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def classify(topic: str):
    """(kind, thing, stream, format): kind "describe", "get" or "invalid"; None for ours or others."""
    levels = topic.split("/")
    if len(levels) < 5 or levels[:2] != ["$aws", "things"] or levels[3] != "streams" or not levels[4]:
        return None
    thing, stream = levels[2], levels[4]
    if len(levels) == 7 and levels[5] in _ANSWERS:
        return None  # an answer (ours)
    if len(levels) == 7 and levels[5] in _REQUESTS and levels[6] in ("json", "cbor"):
        return levels[5], thing, stream, levels[6]
    return "invalid", thing, stream, "json"


def _int(request: dict, key: str, code: str, lo: int, hi: int, default=None):
    value = request.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise StreamError("InvalidRequest", f'"{key}" must be an integer')
    if not lo <= value <= hi:
        raise StreamError(code, f'"{key}" must be {lo}-{hi}, got {value}')
    return value


def bitmap_blocks(text: str, offset: int) -> list:
    """Block ids a GetStream bitmap asks for (hex, optionally 0x-prefixed)."""
    digits = text[2:] if text[:2].lower() == "0x" else text
    if len(digits) % 2:
        digits = "0" + digits
    try:
        data = bytes.fromhex(digits)
    except ValueError:
        raise StreamError("InvalidRequest", '"b" must be a hexadecimal bitmap') from None
    if len(data) >= MAX_BITMAP:
        raise StreamError(
            "BlockBitmapLimitExceeded", f"the bitmap is {len(data)} bytes, less than {MAX_BITMAP} allowed"
        )
    return [offset + 8 * j + k for j, byte in enumerate(data) for k in range(8) if byte >> k & 1]


class StreamApi:
    """Answers DescribeStream and GetStream from the store's streams and the files folder."""

    def __init__(self, store: Store):
        self.store = store
        self._etags: dict = {}  # (path, mtime_ns, size) -> md5 hex

    def handle(self, topic: str, payload: bytes, settings: dict) -> list:
        route = classify(topic)
        if route is None:
            return []
        kind, thing, stream_id, fmt = route
        base = f"$aws/things/{thing}/streams/{stream_id}/"
        token = None
        try:
            if fmt == "cbor":
                raise StreamError(
                    "InvalidCbor", "the stand-in answers the JSON stream topics only; use .../json"
                )
            request = self._parse(payload)
            token = request.get("c")
            if token is not None and (not isinstance(token, str) or len(token.encode()) > 64):
                token = None
                raise StreamError("InvalidRequest", "the client token must be a string of at most 64 bytes")
            if kind == "invalid":
                raise StreamError("InvalidTopic", f"topic {topic} is not a stream API")
            stream = self._stream(stream_id)
            if kind == "describe":
                return [(base + "description/json", self._description(stream, token))]
            return [(base + "data/json", block) for block in self._blocks(stream, request, token, settings)]
        except Exception as err:  # noqa: BLE001 - a bug is answered InternalError, as AWS would
            if not isinstance(err, StreamError):
                print(f"streams: {topic}: {err!r}", file=sys.stderr, flush=True)
                err = StreamError("InternalError", "an internal error occurred in MQTT-based file delivery")
            answer = {"o": err.code, "m": err.message}
            if token is not None:
                answer["c"] = token
            return [(base + "rejected/json", answer)]

    @staticmethod
    def _parse(payload: bytes) -> dict:
        try:
            request = json.loads(payload.decode("utf-8")) if payload else {}
        except (UnicodeDecodeError, ValueError):
            raise StreamError("InvalidJson", "the request is not a valid JSON document") from None
        if not isinstance(request, dict):
            raise StreamError("InvalidJson", "the request must be a JSON object")
        return request

    def _stream(self, stream_id: str):
        row = self.store.read().execute("SELECT * FROM streams WHERE stream_id = ?", (stream_id,)).fetchone()
        if row is None:
            raise StreamError("ResourceNotFound", f"stream {stream_id} does not exist")
        return row

    @staticmethod
    def _description(stream, token) -> dict:
        answer = {"c": token, "s": stream["version"], "d": stream["description"]}
        answer = {k: v for k, v in answer.items() if v is not None}
        answer["r"] = [{"f": f["fileId"], "z": f["size"]} for f in json.loads(stream["files"])]
        return answer

    def _blocks(self, stream, request: dict, token, settings: dict) -> list:
        version = _int(request, "s", "InvalidRequest", 0, 65535)
        if version is not None and version != stream["version"]:
            raise StreamError("VersionMismatch", f"stream version is {stream['version']}, not {version}")
        if "f" not in request:
            raise StreamError("InvalidRequest", 'the stream file id "f" is required')
        file_id = _int(request, "f", "InvalidRequest", 0, 255)
        if "l" not in request:
            raise StreamError("InvalidRequest", 'the block size "l" is required')
        size = _int(request, "l", "BlockSizeOutOfBounds", MIN_BLOCK, MAX_BLOCK)
        offset = _int(request, "o", "OffsetOutOfBounds", 0, MAX_OFFSET, 0)
        count = _int(request, "n", "BlockCountLimitExceeded", 0, MAX_BLOCKS) or None
        bitmap = request.get("b")
        if bitmap is not None and not isinstance(bitmap, str):
            raise StreamError("InvalidRequest", '"b" must be a hexadecimal string')
        entry = next((f for f in json.loads(stream["files"]) if f["fileId"] == file_id), None)
        if entry is None:
            raise StreamError("ResourceNotFound", f"stream {stream['stream_id']} has no file {file_id}")
        data_path = self._file(entry, settings)
        total = -(-entry["size"] // size)
        if bitmap is not None:
            wanted = [i for i in bitmap_blocks(bitmap, offset) if i < total][: count or None]
        else:
            wanted = list(range(offset, min(offset + (count or PER_REQUEST // size), total)))
        wanted = wanted[: max(1, PER_REQUEST // size)]
        if not wanted:
            raise StreamError(
                "ResourceNotFound", f"no such block: file {file_id} has {total} blocks of {size} bytes"
            )
        blocks = []
        with open(data_path, "rb") as src:
            for block in wanted:
                src.seek(block * size)
                chunk = src.read(size)
                answer = {
                    "c": token,
                    "f": file_id,
                    "l": len(chunk),
                    "i": block,
                    "p": base64.b64encode(chunk).decode(),
                }
                blocks.append({k: v for k, v in answer.items() if v is not None})
        return blocks

    def _file(self, entry: dict, settings: dict):
        """The file behind a stream file; its ETag must still be the one the stream recorded."""
        try:
            path = files.locate(settings, entry["s3Location"]["key"])
            info = path.stat()
            key = (str(path), info.st_mtime_ns, info.st_size)
            if key not in self._etags:
                if len(self._etags) > 64:
                    self._etags.clear()
                self._etags[key] = files.file_digest(path, "md5").hex()
        except FileNotFoundError:
            raise StreamError(
                "ResourceNotFound", f"the file of stream file {entry['fileId']} is gone"
            ) from None
        except PermissionError:
            raise StreamError(
                "Unauthorized", f"the file of stream file {entry['fileId']} cannot be read"
            ) from None
        if self._etags[key] != entry["etag"]:
            raise StreamError(
                "ETagMismatch", f"the file of stream file {entry['fileId']} changed since the stream was made"
            )
        return path
