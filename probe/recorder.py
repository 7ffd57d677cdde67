"""Per-unit-of-work state: the spans, queries, cache calls and counters of one request.

The request thread only appends cheap records here; everything that costs (formatting stacks,
redacting params, JSON) happens in :meth:`Unit.to_message`, which the sender thread calls.
The current unit travels in a ContextVar, so threads (threaded runserver) and asyncio tasks
(ASGI) each see their own, and ``sync_to_async`` carries it into worker threads.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from . import sender, stacks

#: The unit of work being recorded in this context, or None outside one.
current_unit: ContextVar[Unit | None] = ContextVar("djangoscope_unit", default=None)

#: The innermost open span of this context (an index into ``Unit.spans``). One module-level var,
#: not one per unit: a ContextVar created per request would pile up in long-lived threads.
_open: ContextVar[int | None] = ContextVar("djangoscope_open_span", default=None)

_sequence = itertools.count(1)

# Span kinds. Queries and cache calls are spans too, with "ref" pointing into their own lists.
SPAN_REQUEST = "request"
SPAN_VIEW = "view"
SPAN_TEMPLATE = "template"
SPAN_SQL = "sql"
SPAN_CACHE = "cache"
SPAN_TRANSACTION = "transaction"

#: Rough wire size of a record without its SQL text; keeps the sender's byte budget honest.
RECORD_OVERHEAD = 240


class Span:
    __slots__ = ("duration_ns", "id", "kind", "meta", "name", "parent", "ref", "start_ns")

    def __init__(self, span_id: int, parent: int | None, kind: str, name: str, start_ns: int):
        self.id = span_id
        self.parent = parent
        self.kind = kind
        self.name = name
        self.start_ns = start_ns
        self.duration_ns: int | None = None
        self.ref: int | None = None
        self.meta: dict[str, Any] | None = None


class Unit:
    """One unit of work (an HTTP request). Not thread-safe by design: one context owns it.

    Queries issued from ``sync_to_async`` threads of the same request append here too; list
    appends are atomic under the GIL, which is all the sharing we need.
    """

    def __init__(self, kind: str = "http", limits: dict[str, int] | None = None) -> None:
        self.kind = kind
        self.pid = os.getpid()
        self.seq = next(_sequence)
        self.id = f"{self.pid}-{self.seq}"
        thread = threading.current_thread()
        self.thread_id = thread.ident
        self.thread_name = thread.name
        self.started_at = time.time()
        self.start_ns = time.perf_counter_ns()
        self.end_ns: int | None = None
        self.cpu_start_ns = time.thread_time_ns()
        self.cpu_ns: int | None = None
        self.is_async = False
        self.request: dict[str, Any] = {}
        self.response: dict[str, Any] = {}
        self.exception: dict[str, Any] | None = None
        self.spans: list[Span] = []
        self.queries: list[dict[str, Any]] = []
        self.cache: list[dict[str, Any]] = []
        self.instances: dict[str, int] = {}
        self.truncated: dict[str, int] = {}
        self.size_estimate = 1024
        limits = limits or {}
        self.max_queries = limits.get("queries", 20000)
        self.max_cache = limits.get("cache", 20000)
        self.max_spans = limits.get("spans", 50000)
        _open.set(None)
        self.root = self.open_span(SPAN_REQUEST, "request")

    # -- spans ---------------------------------------------------------------------------------
    def open_span(self, kind: str, name: str, start_ns: int | None = None) -> Span | None:
        """Open a child of the innermost open span of this context. None once over the cap."""
        if len(self.spans) >= self.max_spans:
            self.truncated["spans"] = self.truncated.get("spans", 0) + 1
            return None
        span = Span(
            len(self.spans),
            _open.get(),
            kind,
            name,
            time.perf_counter_ns() if start_ns is None else start_ns,
        )
        self.spans.append(span)
        _open.set(span.id)
        return span

    def close_span(self, span: Span | None, end_ns: int | None = None) -> None:
        if span is None:
            return
        span.duration_ns = (time.perf_counter_ns() if end_ns is None else end_ns) - span.start_ns
        _open.set(span.parent)

    def leaf_span(self, kind: str, name: str, start_ns: int, end_ns: int, ref: int) -> None:
        """Record a finished span with no children (a query, a cache call)."""
        if len(self.spans) >= self.max_spans:
            self.truncated["spans"] = self.truncated.get("spans", 0) + 1
            return
        span = Span(len(self.spans), _open.get(), kind, name, start_ns)
        span.duration_ns = end_ns - start_ns
        span.ref = ref
        self.spans.append(span)

    @property
    def open_span_id(self) -> int | None:
        return _open.get()

    # -- records -------------------------------------------------------------------------------
    def add_query(self, record: dict[str, Any]) -> None:
        """Append one query record (see docs/protocol.md for its fields)."""
        if len(self.queries) >= self.max_queries:
            self.truncated["queries"] = self.truncated.get("queries", 0) + 1
            return
        record["span"] = _open.get()
        index = len(self.queries)
        self.queries.append(record)
        self.size_estimate += RECORD_OVERHEAD + len(record["sql"])
        self.leaf_span(SPAN_SQL, record["sql"][:60], record["start_ns"], record["end_ns"], index)

    def add_cache(self, record: dict[str, Any]) -> None:
        if len(self.cache) >= self.max_cache:
            self.truncated["cache"] = self.truncated.get("cache", 0) + 1
            return
        record["span"] = _open.get()
        index = len(self.cache)
        self.cache.append(record)
        self.size_estimate += RECORD_OVERHEAD
        self.leaf_span(
            SPAN_CACHE,
            f"{record['op']} {record['alias']}",
            record["start_ns"],
            record["end_ns"],
            index,
        )

    def count_instance(self, label: str) -> None:
        self.instances[label] = self.instances.get(label, 0) + 1

    def finish(self) -> None:
        self.end_ns = time.perf_counter_ns()
        if not self.is_async:
            self.cpu_ns = time.thread_time_ns() - self.cpu_start_ns
        self.close_span(self.root, self.end_ns)

    # -- serialization (sender thread) ---------------------------------------------------------
    def to_message(self, redactor: Any = None) -> dict[str, Any]:
        """The UNIT message body. Runs on the sender thread, never on the request thread."""
        base = self.start_ns
        stack_ids: dict[int, str] = {}
        stack_table: dict[str, list[dict[str, Any]]] = {}

        def stack_ref(key: int | None) -> str | None:
            if key is None:
                return None
            ref = stack_ids.get(key)
            if ref is None:
                ref = stack_ids[key] = f"s{len(stack_ids)}"
                stack_table[ref] = stacks.resolve(key)
            return ref

        queries = []
        for q in self.queries:
            params = q.get("params")
            if redactor is not None:
                params = redactor(q["sql"], params, q.get("many", False))
            queries.append(
                {
                    "span": q["span"],
                    "alias": q["alias"],
                    "vendor": q["vendor"],
                    "sql": q["sql"],
                    "params": params,
                    "many": q.get("many", False),
                    "batch": q.get("batch"),
                    "start_ns": q["start_ns"] - base,
                    "duration_ns": q["end_ns"] - q["start_ns"],
                    "rowcount": q.get("rowcount"),
                    "atomic": q.get("atomic", False),
                    "savepoint_depth": q.get("savepoint_depth", 0),
                    "stack": stack_ref(q.get("stack")),
                    "template": q.get("template"),
                    "orm": q.get("orm"),
                    "error": q.get("error"),
                }
            )
        cache = []
        for c in self.cache:
            cache.append(
                {
                    "span": c["span"],
                    "alias": c["alias"],
                    "backend": c.get("backend"),
                    "op": c["op"],
                    "keys": c.get("keys", []),
                    "hit": c.get("hit"),
                    "hits": c.get("hits"),
                    "misses": c.get("misses"),
                    "start_ns": c["start_ns"] - base,
                    "duration_ns": c["end_ns"] - c["start_ns"],
                    "stack": stack_ref(c.get("stack")),
                    "template": c.get("template"),
                    "error": c.get("error"),
                }
            )
        spans = []
        for s in self.spans:
            item: dict[str, Any] = {
                "id": s.id,
                "parent": s.parent,
                "kind": s.kind,
                "name": s.name,
                "start_ns": s.start_ns - base,
                "duration_ns": s.duration_ns,
            }
            if s.ref is not None:
                item["ref"] = s.ref
            if s.meta:
                item["meta"] = s.meta
            spans.append(item)
        end = self.end_ns if self.end_ns is not None else time.perf_counter_ns()
        return {
            "kind": self.kind,
            "id": self.id,
            "pid": self.pid,
            "thread_id": self.thread_id,
            "thread_name": self.thread_name,
            "async": self.is_async,
            "started_at": self.started_at,
            "duration_ns": end - base,
            "cpu_ns": self.cpu_ns,
            "request": self.request,
            "response": self.response,
            "exception": self.exception,
            "spans": spans,
            "queries": queries,
            "cache": cache,
            "stacks": stack_table,
            "instances": self.instances,
            "truncated": self.truncated,
        }


# -- delivery ----------------------------------------------------------------------------------
_listeners: list[Callable[[Unit], None]] = []


def add_listener(listener: Callable[[Unit], None]) -> None:
    """Call ``listener(unit)`` on the request thread for every finished unit in this process.

    For tests and in-process tools; keep listeners cheap, they run inside the request.
    """
    _listeners.append(listener)


def remove_listener(listener: Callable[[Unit], None]) -> None:
    with contextlib.suppress(ValueError):
        _listeners.remove(listener)


@contextlib.contextmanager
def collect() -> Iterator[list[Unit]]:
    """Collect the units finished in this process while the block runs (tests use this)."""
    units: list[Unit] = []
    add_listener(units.append)
    try:
        yield units
    finally:
        remove_listener(units.append)


def publish(unit: Unit) -> None:
    """Hand a finished unit to the listeners and to the background sender."""
    for listener in tuple(_listeners):
        try:
            listener(unit)
        except Exception:
            sender.count_error()
    sender.submit(unit)
