"""The background sender: one daemon thread per process that ships finished units to the collector.

The request thread only appends a finished unit to a bounded ring (``submit``: a lock, a deque
append, no I/O, no serialization). The sender thread serializes, connects, authenticates, sends,
and reconnects with backoff. It works in batches at quiet moments, when no request is running in
the process (see ``Sender._take_batch``), so it does not compete with requests. While the
collector is away or slow the ring keeps the newest units up to ``BUFFER_BYTES`` (estimated wire
size) and counts what it drops, so memory stays bounded. At exit it waits up to
``FLUSH_TIMEOUT`` for the ring to drain, but only while connected: a process without a collector
exits as fast as one without the probe.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import platform
import select
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from . import wire

if TYPE_CHECKING:
    from .conf import ProbeConfig
    from .recorder import Unit

logger = logging.getLogger("djangoscope.probe")

PROBE_VERSION = "0.1.0"

#: Reconnect delays: start fast (a collector started after the server is found within ~0.1 s),
#: back off to a ceiling so a missing collector costs a connect() attempt every few seconds.
BACKOFF_START = 0.1
BACKOFF_MAX = 3.0
#: After a refusal (wrong token, other protocol version) retry slowly: the user must act first.
REFUSED_BACKOFF = 10.0
CONNECT_TIMEOUT = 1.0
IO_TIMEOUT = 5.0
STATS_INTERVAL = 5.0
#: How long the process must have been without a running request before the sender works.
QUIET = 0.02
#: How often a sender with work waits to check whether the running requests have finished.
BUSY_POLL = 0.1
#: How often an idle sender wakes to notice a collector that closed the connection.
IDLE_POLL = 0.5


def _running() -> int:
    from .recorder import running  # recorder imports this module: resolve at call time

    return running()


class Sender:
    """Owns the ring, the socket and the thread. Create through :func:`get_sender`."""

    def __init__(self, config: ProbeConfig, identity: dict[str, Any]) -> None:
        self.config = config
        self.identity = identity
        self.host, self.port = wire.parse_address(config.address)
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._ring: collections.deque[Unit] = collections.deque()
        self._ring_bytes = 0
        self._sock: socket.socket | None = None
        self._decoder: wire.FrameDecoder | None = None
        self._stopping = False
        self._stop_event = threading.Event()
        self._busy = False
        self._urgent = 0
        self._last_submit = 0.0
        self._flush_bytes = max(1, config.buffer_bytes // 2)
        self._redactor: Any = None
        self._last_refusal: str | None = None
        self.connected = threading.Event()
        self.stats = {
            "submitted": 0,
            "sent": 0,
            "dropped": 0,
            "oversize": 0,
            "errors": 0,
            "connects": 0,
            "refusals": 0,
        }
        self._thread = threading.Thread(target=self._run, name="djangoscope-sender", daemon=True)
        self._thread.start()

    # -- request thread ----------------------------------------------------------------------------
    def submit(self, unit: Unit) -> None:
        size = unit.size_estimate
        with self._lock:
            was_empty = not self._ring
            unit.submitted_at = self._last_submit = time.monotonic()
            self._ring.append(unit)
            self._ring_bytes += size
            self.stats["submitted"] += 1
            # Keep the newest; the unit just added always stays, even if alone it is over budget.
            while self._ring_bytes > self.config.buffer_bytes and len(self._ring) > 1:
                old = self._ring.popleft()
                self._ring_bytes -= old.size_estimate
                self.stats["dropped"] += 1
            if was_empty or self._ring_bytes >= self._flush_bytes:  # start the clock, or hurry
                self._wakeup.notify()

    @property
    def buffered(self) -> int:
        return len(self._ring)

    @property
    def buffered_bytes(self) -> int:
        return self._ring_bytes

    def flush(self, timeout: float) -> bool:
        """Send everything buffered now; False on timeout or when disconnected."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._urgent += 1  # no waiting for a quiet moment while someone waits here
            self._wakeup.notify()
        try:
            while time.monotonic() < deadline:
                with self._lock:
                    if not self._ring and not self._busy:
                        return True
                if not self.connected.is_set():
                    return False
                time.sleep(0.01)
            return False
        finally:
            with self._lock:
                self._urgent -= 1

    def stop(self, timeout: float = 0.0) -> None:
        if timeout and self.connected.is_set():
            self.flush(timeout)
        with self._lock:
            self._stopping = True
            self._wakeup.notify()
        self._stop_event.set()
        self._thread.join(timeout=2.0)
        self._close("stopping")

    # -- sender thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        delay = BACKOFF_START
        last_stats = time.monotonic()
        while True:
            with self._lock:
                if self._stopping:
                    return
            if self._sock is None:
                outcome = self._connect()
                if outcome != "ok":
                    pause = REFUSED_BACKOFF if outcome == "refused" else delay
                    delay = min(delay * 2, BACKOFF_MAX)
                    # Not the ring's condition: new requests must not cause connect storms.
                    self._stop_event.wait(pause)
                    continue
                delay = BACKOFF_START
                last_stats = 0.0  # report counters (drops while away) right after connecting
            try:
                self._service_once()
                if time.monotonic() - last_stats > STATS_INTERVAL:
                    last_stats = time.monotonic()
                    self._send(wire.STATS, self._stats_message())
            except (OSError, wire.ProtocolError) as exc:
                self._close(f"connection lost: {exc}")
            except Exception:  # pragma: no cover - a probe bug must not kill the thread
                self.stats["errors"] += 1
                logger.debug("djangoscope sender error", exc_info=True)
                self._close("internal error")

    def _service_once(self) -> None:
        units = self._take_batch()
        if not units:
            self._poll_incoming()  # notice a closed collector even while idle
            return
        done = 0
        try:
            # Read right before writing: a collector that died since the last frame shows up
            # here as EOF, so the units go back to the ring instead of into a dead socket.
            self._poll_incoming()
            redactor = self._get_redactor()
            for unit in units:
                try:
                    frame = wire.encode_frame(wire.UNIT, unit.to_message(redactor))
                except wire.ProtocolError:
                    self.stats["oversize"] += 1  # dropped on purpose: never retried
                else:
                    self._sock.sendall(frame)  # type: ignore[union-attr]
                    self.stats["sent"] += 1
                done += 1
        finally:
            with self._lock:
                # Not (fully) delivered: back to the front for the next connection. A partial
                # frame is discarded by the collector when the connection drops.
                for unit in reversed(units[done:]):
                    self._ring.appendleft(unit)
                    self._ring_bytes += unit.size_estimate
                self._busy = False

    def _take_batch(self) -> list[Unit]:
        """Wait for finished units and a quiet moment, then take the whole ring.

        Serializing a unit right after it finishes would interleave with the next request on
        the GIL and evict its data from the CPU caches (measured: 10x the sender's own CPU
        time). So the sender waits until no unit of work runs in this process and none has
        finished for ``QUIET`` seconds (between page loads on a dev server, that is nearly
        always), but never longer than ``SEND_DELAY`` after the oldest finished, nor past half
        the byte budget, and not at all while someone flushes.
        """
        with self._lock:
            if not self._ring and not self._stopping:
                self._wakeup.wait(IDLE_POLL)
            while self._ring and not self._stopping and not self._urgent:
                now = time.monotonic()
                overdue = self._ring[0].submitted_at + self.config.send_delay - now
                if overdue <= 0 or self._ring_bytes >= self._flush_bytes:
                    break
                if _running():
                    # Not woken per request: a wake-up takes the GIL from a running request.
                    self._wakeup.wait(min(BUSY_POLL, overdue))
                    continue
                quiet_in = self._last_submit + QUIET - now
                if quiet_in <= 0:
                    break
                self._wakeup.wait(min(quiet_in, overdue))
            units = list(self._ring)
            self._ring.clear()
            self._ring_bytes = 0
            self._busy = bool(units)
            return units

    def _poll_incoming(self) -> None:
        """Read what the collector sent (commands, bye, or EOF) without blocking."""
        sock = self._sock
        if sock is None:
            return
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return
        data = sock.recv(65536)
        if not data:
            raise ConnectionResetError("collector closed the connection")
        for kind, message in self._decoder.feed(data):  # type: ignore[union-attr]
            if kind == wire.BYE:
                raise ConnectionResetError("collector said bye")
            if kind == wire.COMMAND:
                # Reserved: no command is implemented yet; answer so the collector never waits.
                self._send(
                    wire.RESULT,
                    {"id": message.get("id"), "ok": False, "error": "unsupported command"},
                )

    def _send(self, kind: bytes, message: dict[str, Any]) -> None:
        if self._sock is not None:
            self._sock.sendall(wire.encode_frame(kind, message))

    def _connect(self) -> str:
        """Connect and authenticate: 'ok', 'away' (retry soon) or 'refused' (retry slowly)."""
        try:
            sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT)
        except OSError:
            return "away"
        try:
            sock.settimeout(IO_TIMEOUT)
            decoder = wire.FrameDecoder(limit=wire.MAX_HANDSHAKE_FRAME)
            kind, hello = _read_frame(sock, decoder)
            if kind != wire.HELLO:
                raise wire.ProtocolError(f"expected HELLO, got {kind!r}")
            token = self.config.token or wire.read_token()
            proof = wire.token_proof(token, str(hello.get("nonce", ""))) if token else None
            auth = {"protocol": wire.PROTOCOL_VERSION, "proof": proof, "identity": self.identity}
            sock.sendall(wire.MAGIC + wire.encode_frame(wire.AUTH, auth))
            kind, answer = _read_frame(sock, decoder)
        except (OSError, wire.ProtocolError) as exc:
            sock.close()
            logger.debug("djangoscope handshake failed: %s", exc)
            return "away"
        if kind == wire.REFUSED:
            sock.close()
            self.stats["refusals"] += 1
            reason = str(answer.get("message") or answer.get("reason") or "refused")
            if reason != self._last_refusal:
                self._last_refusal = reason
                logger.warning(
                    "djangoscope: the collector at %s:%s refused this probe: %s",
                    self.host,
                    self.port,
                    reason,
                )
            return "refused"
        if kind != wire.WELCOME:
            sock.close()
            return "away"
        self._last_refusal = None
        decoder.limit = wire.MAX_FRAME
        self._sock, self._decoder = sock, decoder
        self.stats["connects"] += 1
        self.connected.set()
        return "ok"

    def _close(self, reason: str) -> None:
        self.connected.clear()
        sock, self._sock = self._sock, None
        if sock is not None:
            logger.debug("djangoscope sender: %s", reason)
            try:
                sock.close()
            except OSError:
                pass

    def _get_redactor(self) -> Any:
        if self._redactor is None:
            from .capture.redact import make_redactor

            self._redactor = make_redactor(self.config)
        return self._redactor

    def _stats_message(self) -> dict[str, Any]:
        with self._lock:
            return {
                **self.stats,
                "buffered": len(self._ring),
                "buffered_bytes": self._ring_bytes,
                "probe_errors": _errors[0],
            }


def _read_frame(sock: socket.socket, decoder: wire.FrameDecoder) -> tuple[bytes, dict[str, Any]]:
    while True:
        for item in decoder.feed(b""):
            return item
        data = sock.recv(4096)
        if not data:
            raise ConnectionResetError("collector closed the connection during the handshake")
        for item in decoder.feed(data):
            return item


# -- process-wide access ---------------------------------------------------------------------------
_sender: Sender | None = None
_sender_lock = threading.Lock()
_errors = [0]


def identity(config: ProbeConfig) -> dict[str, Any]:
    """Who this process is, sent in the handshake so the collector can label its requests."""
    import django
    from django.conf import settings

    settings_module = os.environ.get("DJANGO_SETTINGS_MODULE") or getattr(
        settings, "SETTINGS_MODULE", ""
    )
    project = config.project or (settings_module or "django").split(".")[0]
    return {
        "project": project,
        "settings_module": settings_module,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "server": _server_address(sys.argv),
        "django": django.get_version(),
        "python": platform.python_version(),
        "probe_version": PROBE_VERSION,
        "encoder": wire.ENCODER,
        "argv": [str(a)[:200] for a in sys.argv[:12]],
    }


def _server_address(argv: list[str]) -> str | None:
    """The address a runserver/uvicorn/gunicorn process serves on, when argv says so."""
    for i, arg in enumerate(argv):
        if arg in ("runserver", "runserver_plus"):
            for rest in argv[i + 1 :]:
                if not rest.startswith("-"):
                    return rest if ":" in rest else f"127.0.0.1:{rest}"
            return "127.0.0.1:8000"
        if arg in ("--bind", "-b") and i + 1 < len(argv):
            return argv[i + 1]
    return None


def get_sender() -> Sender:
    global _sender
    current = _sender
    if current is not None and current.pid == os.getpid():
        return current
    with _sender_lock:
        if _sender is None or _sender.pid != os.getpid():
            # First use, or a forked child (gunicorn --preload): threads do not survive fork.
            from .conf import get_config

            config = get_config()
            _sender = Sender(config, identity(config))
            atexit.register(_flush_at_exit, _sender)
        return _sender


def submit(unit: Unit) -> None:
    try:
        get_sender().submit(unit)
    except Exception:  # pragma: no cover - the probe never raises into the app
        count_error()


def count_error() -> None:
    """Count an internal probe error; reported to the collector in STATS frames."""
    _errors[0] += 1


def reset() -> None:
    """Stop the sender (tests and settings changes); the next submit starts a fresh one."""
    global _sender
    with _sender_lock:
        current, _sender = _sender, None
    if current is not None:
        current.stop()


def _flush_at_exit(current: Sender) -> None:
    try:
        if current.pid == os.getpid():
            current.stop(timeout=current.config.flush_timeout)
    except Exception:  # pragma: no cover
        pass
