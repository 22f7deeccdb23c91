"""A TCP proxy in front of the broker that a test can freeze (stop forwarding) or cut.

Device tests use it to make the broker "stop answering" without touching mosquitto: the
proxy keeps the TCP connection open but forwards nothing. Control: connect to the control
port, send one line (`freeze`, `thaw`, `drop`, `refuse`, `accept`, `cut N`, `count`), read
`ok` (`ok <n>` for `count`: the connections accepted so far). `cut N` closes each of the next
N connections as soon as the client has sent its first bytes (a TLS ClientHello), so its
handshake fails with a connection reset.
"""

import socket
import threading
import time


class LinkProxy:
    def __init__(self, target_port: int):
        self.target_port = target_port
        self.frozen = threading.Event()
        self.refusing = False
        self.cut_next = 0
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listen = socket.create_server(("127.0.0.1", 0))
        self._control = socket.create_server(("127.0.0.1", 0))
        self.port = self._listen.getsockname()[1]
        self.control_port = self._control.getsockname()[1]
        self._stopped = False

    def start(self) -> "LinkProxy":
        threading.Thread(target=self._accept_loop, daemon=True).start()
        threading.Thread(target=self._control_loop, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped = True
        self._listen.close()
        self._control.close()
        self.drop()

    def drop(self) -> None:
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._conns.clear()

    def _accept_loop(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listen.accept()
            except OSError:
                return
            self.accepted += 1
            if self.refusing:
                client.close()
                continue
            if self.cut_next > 0:
                self.cut_next -= 1
                threading.Thread(target=self._cut, args=(client,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while self.frozen.is_set() and not self._stopped:
                    # hold the data: the link looks alive to TCP but nothing gets through
                    time.sleep(0.05)
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass

    @staticmethod
    def _cut(client: socket.socket) -> None:
        try:
            client.settimeout(5)
            client.recv(1)
        except OSError:
            pass
        client.close()

    def _control_loop(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self._control.accept()
            except OSError:
                return
            with conn:
                line = conn.makefile().readline().strip()
                if line == "freeze":
                    self.frozen.set()
                elif line == "thaw":
                    self.frozen.clear()
                elif line == "drop":
                    self.frozen.clear()
                    self.drop()
                elif line == "refuse":
                    self.refusing = True
                elif line == "accept":
                    self.refusing = False
                elif line.startswith("cut "):
                    self.cut_next = int(line[4:])
                elif line == "count":
                    conn.sendall(b"ok %d\n" % self.accepted)
                    continue
                conn.sendall(b"ok\n")
