"""Which things are connected, read from mosquitto's connection log (for GetThingConnectivityData).

mosquitto (2.0, `connection_messages true`) logs every CONNECT with the client id, the source
address, the keepalive, the clean-session flag and the user name (the certificate's CN: the
thing), and every way a connection ends. The Jobs service tails that log and keeps the last
state per thing in the `connectivity` table, with AWS's `disconnectReason` for how it ended.
The broker truncates its log when it starts: then every thing still marked connected was
disconnected by the server, and the new log is replayed from its start.
"""

import re
from pathlib import Path

from tools.standin.store import Store

_CONNECTED = re.compile(
    r"(\d+): New client connected from (\S+):(\d+) as (\S+) \(p\d+, c(\d), k(\d+)(?:, u'([^']*)')?\)\.$"
)
_ENDED = re.compile(r"(\d+): (?:Client (\S+) (.+)|Socket error on client (\S+), disconnecting\.)$")
# how mosquitto words the end of a connection -> AWS's DisconnectReasonValue
_REASONS = (
    ("disconnected.", "CLIENT_INITIATED_DISCONNECT"),
    ("closed its connection.", "CONNECTION_LOST"),
    ("has exceeded timeout, disconnecting.", "MQTT_KEEP_ALIVE_TIMEOUT"),
    ("already connected, closing old connection.", "DUPLICATE_CLIENTID"),
    ("disconnected, not authorised.", "AUTH_ERROR"),
    ("disconnected due to", "CLIENT_ERROR"),
)


def parse(line: str):
    """("connected", stamp, client_id, thing, ip, port, keepalive, clean) or ("disconnected",
    stamp, client_id, reason); None for any other line."""
    match = _CONNECTED.match(line)
    if match:
        stamp, ip, port, client, clean, keepalive, user = match.groups()
        return (
            "connected",
            float(stamp),
            client,
            user or client,
            ip,
            int(port),
            int(keepalive),
            clean == "1",
        )
    match = _ENDED.match(line)
    if not match:
        return None
    stamp, client, wording, socket_error = match.groups()
    if socket_error:
        return ("disconnected", float(stamp), socket_error, "CONNECTION_LOST")
    if client == "<unknown>":
        return None
    for start, reason in _REASONS:
        if wording.startswith(start):
            return ("disconnected", float(stamp), client, reason)
    return None


class Presence:
    """Follows the broker's log into the store: call `poll()` now and then."""

    def __init__(self, store: Store, log: Path):
        self.store = store
        self.log = Path(log)
        self._offset = 0
        self._first = b""  # the log's first line: a new one means the broker started again

    def poll(self) -> int:
        """Apply what the log gained since the last call; the number of events applied."""
        try:
            with self.log.open("rb") as src:
                first = src.readline()
                if first != self._first or self.log.stat().st_size < self._offset:
                    self._restarted(first)
                src.seek(self._offset)
                data = src.read()
        except OSError:
            return 0
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next poll
        self._offset += end
        events = [e for e in map(parse, data[:end].decode(errors="replace").splitlines()) if e]
        if events:
            with self.store.transaction() as db:
                for event in events:
                    _apply(db, event)
        return len(events)

    def _restarted(self, first: bytes) -> None:
        self._first, self._offset = first, 0
        stamp = re.match(rb"(\d+):", first)
        with self.store.transaction() as db:
            db.execute(
                "UPDATE connectivity SET connected = 0, reason = 'SERVER_INITIATED_DISCONNECT', "
                "stamp = MAX(stamp, ?) WHERE connected = 1",
                (float(stamp.group(1)) if stamp else 0.0,),
            )


def _apply(db, event) -> None:
    if event[0] == "connected":
        _, stamp, client, thing, ip, port, keepalive, clean = event
        db.execute(
            "INSERT OR REPLACE INTO connectivity (thing, client_id, connected, stamp, reason, source_ip, "
            "source_port, keepalive, clean_session) VALUES (?, ?, 1, ?, NULL, ?, ?, ?, ?)",
            (thing, client, stamp, ip, port, keepalive, int(clean)),
        )
        return
    _, stamp, client, reason = event
    db.execute(
        "UPDATE connectivity SET connected = 0, stamp = ?, reason = ? WHERE client_id = ? AND connected = 1",
        (stamp, reason, client),
    )
