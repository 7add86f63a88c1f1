"""A TCP proxy a test controls, in front of a real server. Three states:

- up: bytes flow both ways;
- cut(): every open connection is dropped and new ones are refused until restore() (a
  database 'blinking', as on a network);
- blackhole(): connections are accepted and kept, the kernel acknowledges what is sent, but
  nothing is forwarded either way until restore() (a database, or a path to it, that stops
  answering without closing anything: a frozen VM, a stalled proxy). What was held back then
  flows, so a statement stuck in the blackhole completes after restore(), as it would once
  such a stall ends.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._up = threading.Event()  # clear: cut, connections refused
        self._up.set()
        self._flowing = threading.Event()  # clear: blackhole, bytes held back
        self._flowing.set()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="tcp-proxy").start()

    def cut(self) -> None:
        """Drop every open connection; new ones are closed at once until restore()."""
        self._up.clear()
        with self._lock:
            socks, self._open = self._open, set()
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def blackhole(self) -> None:
        """Accept and hold connections, forward nothing, until restore()."""
        self._flowing.clear()

    def restore(self) -> None:
        self._up.set()
        self._flowing.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._flowing.set()  # release the pumps held by a blackhole: their sockets are closed
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                self._flowing.wait()  # in a blackhole, leave the bytes in the kernel's buffer
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()  # ...or hold those read just before it began
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
