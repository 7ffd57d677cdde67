"""Headless recording: a collector whose events are written to a session file.

Used by ``djangoscope record`` and the headless ``djangoscope demo``. The network thread only
decodes and queues; this module's ``drain`` (on the owner's thread) writes to SQLite, so a slow
disk slows the probes through TCP backpressure instead of growing memory.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Any

from djangoscope.app.core.store import SessionStore

from .server import Collector, Connection, Event


def summarize(message: dict[str, Any]) -> dict[str, Any]:
    """The few numbers a one-line log of a request needs, computed defensively."""
    request = message.get("request") if isinstance(message.get("request"), dict) else {}
    response = message.get("response") if isinstance(message.get("response"), dict) else {}
    queries = message.get("queries") if isinstance(message.get("queries"), list) else []
    cache = message.get("cache") if isinstance(message.get("cache"), list) else []
    db_ns = sum(q.get("duration_ns") or 0 for q in queries if isinstance(q, dict))
    duration_ns = message.get("duration_ns") or 0
    exception = message.get("exception") if isinstance(message.get("exception"), dict) else None
    return {
        "method": request.get("method") or "?",
        "path": request.get("path") or "?",
        "status": response.get("status"),
        "duration_ms": duration_ns / 1e6 if isinstance(duration_ns, (int, float)) else 0.0,
        "db_ms": db_ns / 1e6,
        "queries": len(queries),
        "cache": len(cache),
        "exception": (exception or {}).get("type"),
    }


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_line(connection: Connection, message: dict[str, Any]) -> str:
    s = summarize(message)
    status = s["status"] if s["status"] is not None else "---"
    line = (
        f"{time.strftime('%H:%M:%S')}  pid {connection.identity.get('pid', '?'):<7} "
        f"{s['method']:<6} {_cut(s['path'], 36):<36} {status}  {s['duration_ms']:8.1f} ms  "
        f"{s['queries']:4d} q {s['db_ms']:7.1f} ms db  {s['cache']:3d} cache"
    )
    if s["exception"]:
        line += f"  ! {s['exception']}"
    return line


class SessionRecorder:
    """Owns a collector and a session store; ``drain`` moves events from one to the other."""

    def __init__(
        self,
        collector: Collector,
        store: SessionStore,
        *,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.collector = collector
        self.store = store
        self.log = log or (lambda text: None)
        self.units = 0
        self.processes: dict[str, int] = {}
        self.rejected = 0

    def drain(self, timeout: float = 0.2, max_events: int = 1000) -> int:
        """Write queued events to the store; returns how many units were written."""
        written = 0
        deadline = time.monotonic() + timeout
        for _ in range(max_events):
            remaining = max(0.0, deadline - time.monotonic())
            try:
                event = (
                    self.collector.events.get(timeout=remaining)
                    if written == 0
                    else (self.collector.events.get_nowait())
                )
            except queue.Empty:
                break
            written += self._handle(event)
        return written

    def drain_all(self) -> int:
        """Write everything still queued (used at shutdown)."""
        written = 0
        while True:
            try:
                event = self.collector.events.get_nowait()
            except queue.Empty:
                return written
            written += self._handle(event)

    def _process_id(self, connection: Connection) -> int:
        process_id = self.processes.get(connection.id)
        if process_id is None:
            process_id = self.store.add_process(connection.identity, connection.id)
            self.processes[connection.id] = process_id
        return process_id

    def _handle(self, event: Event) -> int:
        connection = event.connection
        if event.kind == "connected" and connection is not None:
            self._process_id(connection)
            ident = connection.identity
            self.log(
                f"+ connected: pid {ident.get('pid', '?')} {ident.get('project') or '?'} "
                f"({ident.get('settings_module') or '?'}, Django {ident.get('django') or '?'}"
                f"{', serving ' + ident['server'] if ident.get('server') else ''})"
            )
        elif event.kind == "unit" and connection is not None and event.message is not None:
            self.store.add_unit(self._process_id(connection), event.message)
            self.units += 1
            self.log(format_line(connection, event.message))
            return 1
        elif event.kind == "stats" and connection is not None and event.message is not None:
            self.store.set_process_stats(self._process_id(connection), event.message)
        elif event.kind == "disconnected" and connection is not None:
            self.store.end_process(self._process_id(connection), connection.stats or None)
            dropped = (connection.stats or {}).get("dropped") or 0
            note = (
                f", it dropped {dropped} request(s) while the collector was away" if dropped else ""
            )
            self.log(f"- disconnected: {connection.label} ({connection.units} requests{note})")
        elif event.kind == "rejected":
            self.rejected += 1
            self.log(f"! rejected {event.reason}")
        return 0
