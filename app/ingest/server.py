"""The collector server: accepts many probes at once and turns their frames into events.

It runs an asyncio loop on its own thread and never touches storage or the GUI: every decoded
event goes into one thread-safe queue (``events``) that the owner drains (the headless recorder
writes them to SQLite; the desktop app will batch them into its models). Input is untrusted:
garbage, wrong tokens and oversized frames are refused, counted and logged, and the collector
keeps serving every other probe.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from djangoscope.probe import wire

logger = logging.getLogger("djangoscope.collector")

#: Seconds a new connection gets to complete the handshake.
HANDSHAKE_TIMEOUT = 5.0
#: Malformed frames tolerated on one authenticated connection before it is closed.
MAX_BAD_FRAMES = 10

COLLECTOR_NAME = "djangoscope collector 0.1.0"


class CollectorError(RuntimeError):
    """The collector cannot start (address in use, non-loopback without opt-in, ...)."""


@dataclass
class Connection:
    """One authenticated probe connection (one Django process)."""

    id: str
    peer: str
    identity: dict[str, Any]
    connected_at: float = field(default_factory=time.time)
    units: int = 0
    bad_frames: int = 0
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        ident = self.identity
        return f"pid {ident.get('pid', '?')} {ident.get('project') or ''}".strip()


@dataclass
class Event:
    """What the collector hands its owner: kind is connected/unit/stats/disconnected/rejected."""

    kind: str
    connection: Connection | None
    message: dict[str, Any] | None = None
    reason: str | None = None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Collector:
    """Listen on ``host:port``; authenticate probes with ``token``; queue their events."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str,
        allow_remote: bool = False,
        max_frame: int = wire.MAX_FRAME,
        queue_size: int = 10000,
    ) -> None:
        if not is_loopback(host) and not allow_remote:
            raise CollectorError(
                f"refusing to listen on {host}: the collector is loopback-only by default. "
                "Pass --allow-remote to listen beyond this machine (probes still need the token)."
            )
        if not token:
            raise CollectorError("the collector needs a token")
        self.host = host
        self.port = port
        self.token = token
        self.max_frame = max_frame
        self.events: queue.Queue[Event] = queue.Queue(maxsize=queue_size)
        self.counters = {"accepted": 0, "refused": 0, "bad_frames": 0, "units": 0, "overflow": 0}
        self.connections: dict[str, Connection] = {}
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None

    # -- lifecycle (owner thread) ---------------------------------------------------------------
    def start(self) -> tuple[str, int]:
        """Bind and start serving on a background thread; returns the bound (host, port)."""
        self._thread = threading.Thread(target=self._thread_main, name="djangoscope-collector")
        self._thread.daemon = True
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            error = self._start_error
            raise CollectorError(f"cannot listen on {self.host}:{self.port}: {error}") from error
        return self.host, self.port

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection; frames already queued stay in ``events``."""
        loop = self._loop
        if loop is None or self._thread is None:
            return
        if loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            try:
                future.result(timeout)
            except Exception:  # pragma: no cover - best effort
                logger.debug("collector shutdown", exc_info=True)
        self._thread.join(timeout)

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._listen())
        except BaseException as exc:
            self._start_error = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, limit=2**16, reuse_address=True
        )
        sockname = self._server.sockets[0].getsockname()
        self.port = sockname[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        await asyncio.sleep(0)
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            except (asyncio.TimeoutError, Exception):  # pragma: no cover
                pass
        asyncio.get_running_loop().call_soon(asyncio.get_running_loop().stop)

    # -- per connection (loop thread) -----------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        peer = _peer(writer)
        connection: Connection | None = None
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = await asyncio.wait_for(
                self._handshake(reader, writer, peer), HANDSHAKE_TIMEOUT
            )
            if connection is None:
                return
            await self._serve(reader, writer, connection)
        except asyncio.TimeoutError:
            self._reject(peer, "handshake timed out")
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except Exception:  # pragma: no cover - never let one connection take the server down
            logger.exception("collector: unexpected error on %s", peer)
        finally:
            self._writers.discard(writer)
            writer.close()
            if connection is not None:
                self.connections.pop(connection.id, None)
                self._emit(Event("disconnected", connection))

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> Connection | None:
        nonce = wire.new_nonce()
        hello = {"protocol": wire.PROTOCOL_VERSION, "nonce": nonce, "collector": COLLECTOR_NAME}
        writer.write(wire.encode_frame(wire.HELLO, hello))
        await writer.drain()
        magic = await reader.readexactly(len(wire.MAGIC))
        if magic != wire.MAGIC:
            await self._refuse(writer, wire.REFUSED_MALFORMED, "not a djangoscope probe")
            self._reject(peer, f"not a djangoscope probe (first bytes {magic[:8]!r})")
            return None
        try:
            kind, auth = await _read_frame(reader, wire.MAX_HANDSHAKE_FRAME)
        except wire.ProtocolError as exc:
            await self._refuse(writer, wire.REFUSED_MALFORMED, str(exc))
            self._reject(peer, f"malformed handshake: {exc}")
            return None
        identity = auth.get("identity") if isinstance(auth.get("identity"), dict) else {}
        who = f"pid {identity.get('pid', '?')} at {peer}"
        if kind != wire.AUTH:
            await self._refuse(writer, wire.REFUSED_MALFORMED, "expected AUTH")
            self._reject(peer, "expected AUTH")
            return None
        if auth.get("protocol") != wire.PROTOCOL_VERSION:
            message = (
                f"protocol version {auth.get('protocol')!r} is not supported by this collector "
                f"(it speaks {wire.PROTOCOL_VERSION}); install matching djangoscope versions"
            )
            await self._refuse(writer, wire.REFUSED_VERSION, message)
            self._reject(peer, f"{who}: {message}")
            return None
        if not wire.check_proof(self.token, nonce, auth.get("proof")):
            missing = auth.get("proof") is None
            message = (
                "no token: the probe found no DJANGOSCOPE_TOKEN and no token file"
                if missing
                else "wrong token"
            ) + (
                f"; use the collector's token (the file {wire.token_path()} on the collector's "
                "machine, or the DJANGOSCOPE_TOKEN it was started with)"
            )
            await self._refuse(writer, wire.REFUSED_TOKEN, message)
            self._reject(peer, f"{who}: {'no token' if missing else 'wrong token'}")
            return None
        connection = Connection(f"c{next(self._ids)}", peer, identity)
        writer.write(
            wire.encode_frame(
                wire.WELCOME, {"protocol": wire.PROTOCOL_VERSION, "connection": connection.id}
            )
        )
        await writer.drain()
        self.connections[connection.id] = connection
        self.counters["accepted"] += 1
        self._emit(Event("connected", connection))
        return connection

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: Connection
    ) -> None:
        while True:
            try:
                kind, message = await _read_frame(reader, self.max_frame)
            except asyncio.IncompleteReadError:
                return
            except _Oversize as exc:
                self.counters["bad_frames"] += 1
                logger.warning(
                    "collector: %s sent an oversized frame (%s); closing it", connection.label, exc
                )
                self._emit(Event("rejected", connection, reason=f"oversized frame: {exc}"))
                return
            except wire.ProtocolError as exc:
                self.counters["bad_frames"] += 1
                connection.bad_frames += 1
                logger.warning("collector: bad frame from %s: %s", connection.label, exc)
                if connection.bad_frames >= MAX_BAD_FRAMES:
                    self._emit(Event("rejected", connection, reason="too many bad frames"))
                    return
                continue
            if kind == wire.UNIT:
                connection.units += 1
                self.counters["units"] += 1
                await self._put(Event("unit", connection, message))
            elif kind == wire.STATS:
                connection.stats = message
                self._emit(Event("stats", connection, message))
            elif kind == wire.BYE:
                return
            elif kind == wire.RESULT:
                continue
            else:
                connection.bad_frames += 1
                self.counters["bad_frames"] += 1

    async def _refuse(self, writer: asyncio.StreamWriter, reason: str, message: str) -> None:
        try:
            writer.write(wire.encode_frame(wire.REFUSED, {"reason": reason, "message": message}))
            await writer.drain()
        except OSError:
            pass

    def _reject(self, peer: str, why: str) -> None:
        self.counters["refused"] += 1
        logger.warning("collector: refused %s: %s", peer, why)
        self._emit(Event("rejected", None, reason=f"{peer}: {why}"))

    async def _put(self, event: Event) -> None:
        """Queue a unit with backpressure: while the owner lags, stop reading this socket.

        TCP then pushes back to the probe, whose bounded ring drops (and counts) its oldest
        units: nothing is lost silently and the collector's memory stays bounded.
        """
        while True:
            try:
                self.events.put_nowait(event)
                return
            except queue.Full:
                await asyncio.sleep(0.01)

    def _emit(self, event: Event) -> None:
        try:
            self.events.put_nowait(event)
        except queue.Full:
            # The owner is not draining; keep serving but say what was lost.
            self.counters["overflow"] += 1


class _Oversize(wire.ProtocolError):
    pass


async def _read_frame(reader: asyncio.StreamReader, limit: int) -> tuple[bytes, dict[str, Any]]:
    header = await reader.readexactly(wire.HEADER_SIZE)
    size = int.from_bytes(header, "big")
    if size > limit:
        raise _Oversize(f"{size} bytes > limit {limit}")
    payload = await reader.readexactly(size)
    return wire.decode_payload(payload)


def _peer(writer: asyncio.StreamWriter) -> str:
    info = writer.get_extra_info("peername")
    if isinstance(info, tuple) and len(info) >= 2:
        return f"{info[0]}:{info[1]}"
    return str(info)
