"""A TCP proxy to PostgreSQL that breaks the link on demand, for testing reconnects.

Put it between your code and the server, then make the network fail the way real networks do::

    with FaultProxy.for_dsn(dsn) as proxy:
        hub = pghub.Hub(proxy.dsn(dsn))      # the hub's session goes through the proxy
        ...
        proxy.reset()                        # the server "crashed": RST on every connection

The proxy listens on 127.0.0.1 (an ephemeral port) and forwards every connection to the
server. The faults:

- ``reset()``: abort every live connection with a TCP RST (SO_LINGER 0, then close), as a
  crashed server or a restarted middlebox does; the client sees the error at once;
- ``blackhole()``: stop forwarding in both directions but keep the sockets open, so the
  client sees a half-open peer: its bytes are acknowledged by the kernel and nothing more
  comes back (a dead NAT entry, a pulled cable); only the client's own timeouts notice;
- ``resume()``: forward again (and end the black hole);
- ``refuse()``: new connections are reset at once (the server looks down); ``accept()``
  undoes it.

Every thread checks its flags at least every 50 ms, and unless ``lifetime`` is None the whole
proxy stops by itself after ``lifetime`` seconds, so a forgotten proxy never outlives its test
for long. The proxy forwards TCP only: a DSN that names a Unix socket cannot go through it.
See docs/testing.md.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from types import TracebackType

from psycopg.conninfo import conninfo_to_dict, make_conninfo

_POLL = 0.05  # seconds between checks of the control flags
_CHUNK = 65536


def _abort(sock: socket.socket) -> None:
    """Close a socket with RST instead of FIN: SO_LINGER on with a zero timeout."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Link:
    """One proxied connection: the client's socket, the server's socket, two pump threads."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.blackholed = False
        self.stopping = threading.Event()
        self.abort = False  # close with RST rather than FIN
        self.closed = threading.Event()
        self._running = 2
        self._lock = threading.Lock()

    def start(self) -> None:
        for src, dst in ((self.client, self.server), (self.server, self.client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def stop(self, *, abort: bool) -> None:
        """Ask both pumps to stop; the last one out closes the sockets."""
        if abort:
            self.abort = True
        self.stopping.set()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self.stopping.is_set():
                if self.blackholed:
                    # Read nothing and write nothing: the peer's kernel still ACKs, the
                    # application on the far side never hears a byte.
                    self.stopping.wait(_POLL)
                    continue
                readable, _, _ = select.select([src], [], [], _POLL)
                if not readable or self.blackholed:
                    continue
                data = src.recv(_CHUNK)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self.stopping.set()
            self._finish()

    def _finish(self) -> None:
        with self._lock:
            self._running -= 1
            last = self._running == 0
        if not last:
            return
        for sock in (self.client, self.server):
            if self.abort:
                _abort(sock)
            else:
                sock.close()
        self.proxy._forget(self)
        self.closed.set()


class FaultProxy:
    """A threaded TCP proxy to PostgreSQL with switches for the faults tests need.

    Use it as a context manager (or ``start()`` and ``close()``); ``dsn(base)`` rewrites a
    conninfo to go through it. ``lifetime`` bounds how long it runs (None: until closed).
    """

    def __init__(
        self,
        target_host: str = "127.0.0.1",
        target_port: int = 5432,
        *,
        lifetime: float | None = 120.0,
    ) -> None:
        self.target = (target_host, target_port)
        self.lifetime = lifetime
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._refusing = False
        self._blackhole_new = False
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._deadline = 0.0
        self.accepted = 0  # connections accepted and forwarded, over the proxy's life
        self.refused = 0  # connections reset at once because of refuse()

    @classmethod
    def for_dsn(cls, dsn: str, *, lifetime: float | None = 120.0) -> FaultProxy:
        """A proxy (not yet started) to the server that ``dsn`` names.

        Raises ValueError for a DSN that names a Unix socket or more than one host.
        """
        params = conninfo_to_dict(dsn)
        host = str(params.get("hostaddr") or params.get("host") or "")
        port = str(params.get("port") or "5432")
        if not host or host.startswith("/") or host.startswith("@"):
            raise ValueError(
                f"FaultProxy forwards TCP, and this DSN names a Unix socket ({host or 'the'}"
                " libpq default): give it a host such as 127.0.0.1"
            )
        if "," in host or "," in port:
            raise ValueError(f"FaultProxy forwards to one server, and this DSN names {host!r}")
        return cls(host, int(port), lifetime=lifetime)

    # --- lifetime ---
    def start(self) -> FaultProxy:
        """Start accepting connections; returns the proxy."""
        lifetime = self.lifetime
        self._deadline = float("inf") if lifetime is None else time.monotonic() + lifetime
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop accepting, close every link (RST) and wait a bounded time for the threads."""
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._listener.close()
        self._stop_links(abort=True)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- what tests read ---
    @property
    def address(self) -> tuple[str, int]:
        """Where the proxy listens: ``("127.0.0.1", port)``."""
        return ("127.0.0.1", self.port)

    @property
    def connections(self) -> int:
        """Live proxied connections (a black-holed one is still live)."""
        with self._lock:
            return len(self._links)

    def dsn(self, base_dsn: str) -> str:
        """``base_dsn`` with host and port pointing at this proxy."""
        params = conninfo_to_dict(base_dsn)
        params.pop("hostaddr", None)
        params["host"] = "127.0.0.1"
        params["port"] = str(self.port)
        return make_conninfo("", **params)

    def wait_connections(self, count: int, timeout: float = 5.0) -> None:
        """Wait until exactly ``count`` connections are live, or fail."""
        deadline = time.monotonic() + timeout
        while self.connections != count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"proxy has {self.connections} live connections, expected {count}"
                )
            time.sleep(0.01)

    # --- faults ---
    def reset(self) -> int:
        """Abort every live connection with RST; returns how many were aborted."""
        return self._stop_links(abort=True)

    def blackhole(self, *, new_connections: bool = False) -> None:
        """Stop forwarding on every live connection, keeping its sockets open.

        With ``new_connections`` the connections accepted from now on are black-holed too;
        otherwise they are forwarded, as when one TCP path dies and a fresh one works.
        """
        with self._lock:
            self._blackhole_new = new_connections
            for link in self._links:
                link.blackholed = True

    def resume(self) -> None:
        """Forward again on every connection and on new ones."""
        with self._lock:
            self._blackhole_new = False
            for link in self._links:
                link.blackholed = False

    def refuse(self) -> None:
        """Reset every new connection at once (the server looks unreachable)."""
        self._refusing = True

    def accept(self) -> None:
        """Forward new connections again after ``refuse()``."""
        self._refusing = False

    # --- internals ---
    def _stop_links(self, *, abort: bool) -> int:
        with self._lock:
            links = list(self._links)
        for link in links:
            link.stop(abort=abort)
        for link in links:
            if not link.closed.wait(timeout=5):
                raise AssertionError("a proxied connection did not close within 5 s")
        return len(links)

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _serve(self) -> None:
        try:
            while not self._closing.is_set():
                if time.monotonic() > self._deadline:
                    break  # bounded lifetime: a leaked proxy stops by itself
                readable, _, _ = select.select([self._listener], [], [], _POLL)
                if not readable:
                    continue
                client, _ = self._listener.accept()
                if self._refusing:
                    self.refused += 1
                    _abort(client)
                    continue
                self._connect(client)
        finally:
            self._closing.set()
            self._listener.close()  # from now on a connect is refused by the kernel
            self._stop_links(abort=True)

    def _connect(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            _abort(client)
            return
        server.settimeout(None)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = _Link(self, client, server)
        with self._lock:
            link.blackholed = self._blackhole_new
            self._links.add(link)
            self.accepted += 1
        link.start()
