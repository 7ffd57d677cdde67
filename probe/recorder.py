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
import weakref
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
_get_ident = threading.get_ident

#: Units started and not finished in this process. The sender waits for this to be empty (a
#: quiet moment) before it works, so its serialization does not interleave with requests.
#: Weak, so a unit that is abandoned without finish() cannot keep the process "busy" forever.
_running: weakref.WeakSet[Unit] = weakref.WeakSet()


def running() -> int:
    """How many units of work are being recorded right now in this process."""
    return len(_running)


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


# Positions in a query record: a tuple, built once the query has finished. ``Unit.queries`` and
# ``Unit.to_message`` turn records into the documented dicts; the request thread never does.
_Q_SQL = 0
_Q_PARAMS = 1
_Q_MANY = 2
_Q_BATCH = 3
_Q_ALIAS = 4
_Q_VENDOR = 5
_Q_ATOMIC = 6
_Q_SAVEPOINT_DEPTH = 7
_Q_STACK = 8
_Q_TEMPLATE = 9
_Q_ORM = 10
_Q_ROWCOUNT = 11
_Q_ERROR = 12
_Q_START = 13
_Q_END = 14
_Q_SPAN = 15  # the open span when the query ran (the "span" field)
_Q_LEAF = 16  # the id of the query's own leaf span, None when spans were truncated


def _query_dict(record: tuple[Any, ...]) -> dict[str, Any]:
    """A record as the dict ``add_query`` documents (what ``Unit.queries`` hands out)."""
    return {
        "sql": record[_Q_SQL],
        "params": record[_Q_PARAMS],
        "many": record[_Q_MANY],
        "batch": record[_Q_BATCH],
        "alias": record[_Q_ALIAS],
        "vendor": record[_Q_VENDOR],
        "atomic": record[_Q_ATOMIC],
        "savepoint_depth": record[_Q_SAVEPOINT_DEPTH],
        "stack": record[_Q_STACK],
        "template": record[_Q_TEMPLATE],
        "orm": record[_Q_ORM],
        "rowcount": record[_Q_ROWCOUNT],
        "error": record[_Q_ERROR],
        "start_ns": record[_Q_START],
        "end_ns": record[_Q_END],
        "span": record[_Q_SPAN],
    }


class Unit:
    """One unit of work (an HTTP request). Not thread-safe by design: one context owns it.

    Queries issued from ``sync_to_async`` threads of the same request append here too; list
    appends are atomic under the GIL, which is all the sharing we need.

    Queries are kept as compact tuples (see ``_Q_*``) and their leaf spans are not objects
    until asked for: per query the request thread allocates one record, which keeps both the
    hook and the garbage collector cheap. :attr:`queries` and :attr:`spans` give the public
    views (dicts, :class:`Span` objects).
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
        #: Spans that are objects from the start (request, view, template, transaction, cache).
        self._spans: list[Span] = []
        #: Spans made so far, objects or not: the next span's id.
        self.span_count = 0
        #: Query records (tuples, see ``_Q_*``), in order.
        self.records: list[tuple[Any, ...]] = []
        self._query_dicts: list[dict[str, Any]] = []
        self.cache: list[dict[str, Any]] = []
        #: Model class -> instances created (labels are looked up when read).
        self.instance_counts: dict[type, int] = {}
        #: id(ModelIterable.__iter__ frame) -> (self.id, index of the query it ran): which query
        #: loaded the instances that frame builds (see capture/origin.py).
        self.loaders: dict[int, tuple[str, int]] = {}
        #: Query index -> instances it loaded (tagged with it; see capture/models.py).
        self.rows: dict[int, int] = {}
        #: (query index, relation) read on an instance that query loaded: the joins used.
        self.touched: set[tuple[int, str]] = set()
        self.truncated: dict[str, int] = {}
        self.size_estimate = 1024
        #: When the sender got it (monotonic seconds), for its SEND_DELAY deadline.
        self.submitted_at = 0.0
        limits = limits or {}
        self.max_queries = limits.get("queries", 20000)
        self.max_cache = limits.get("cache", 20000)
        self.max_spans = limits.get("spans", 50000)
        #: The stack memo of the thread that made the unit (None once finished); other threads'
        #: are in _memos (see stack_memo).
        self.memo: stacks.StackMemo | None = stacks.StackMemo()
        self._memos: dict[int, stacks.StackMemo] = {}
        self._finished = False
        _open.set(None)
        self.root = self.open_span(SPAN_REQUEST, "request")
        _running.add(self)

    # -- spans ---------------------------------------------------------------------------------
    def open_span(self, kind: str, name: str, start_ns: int | None = None) -> Span | None:
        """Open a child of the innermost open span of this context. None once over the cap."""
        span_id = self.span_count
        if span_id >= self.max_spans:
            self.truncated["spans"] = self.truncated.get("spans", 0) + 1
            return None
        self.span_count = span_id + 1
        span = Span(
            span_id,
            _open.get(),
            kind,
            name,
            time.perf_counter_ns() if start_ns is None else start_ns,
        )
        self._spans.append(span)
        _open.set(span_id)
        return span

    def close_span(self, span: Span | None, end_ns: int | None = None) -> None:
        if span is None:
            return
        span.duration_ns = (time.perf_counter_ns() if end_ns is None else end_ns) - span.start_ns
        _open.set(span.parent)

    def leaf_span(self, kind: str, name: str, start_ns: int, end_ns: int, ref: int) -> None:
        """Record a finished span with no children (a query, a cache call)."""
        span_id = self.span_count
        if span_id >= self.max_spans:
            self.truncated["spans"] = self.truncated.get("spans", 0) + 1
            return
        self.span_count = span_id + 1
        span = Span(span_id, _open.get(), kind, name, start_ns)
        span.duration_ns = end_ns - start_ns
        span.ref = ref
        self._spans.append(span)

    @property
    def open_span_id(self) -> int | None:
        return _open.get()

    @property
    def spans(self) -> list[Span]:
        """Every span in id order, queries' leaf spans included (made on each call)."""
        return [
            span if span is not None else _query_span(record, ref)
            for span, ref, record in _merge_spans(list(self._spans), self.records)
        ]

    # -- records -------------------------------------------------------------------------------
    @property
    def queries(self) -> list[dict[str, Any]]:
        """The query records as dicts (see docs/protocol.md for their fields)."""
        dicts = self._query_dicts
        records = self.records
        for i in range(len(dicts), len(records)):
            dicts.append(_query_dict(records[i]))
        return dicts

    @property
    def query_count(self) -> int:
        return len(self.records)

    def add_query(self, record: dict[str, Any]) -> None:
        """Append one query record (see docs/protocol.md for its fields)."""
        get = record.get
        self.add_query_record(
            record["sql"],
            get("params"),
            get("many", False),
            get("batch"),
            record["alias"],
            record["vendor"],
            get("atomic", False),
            get("savepoint_depth", 0),
            get("stack"),
            get("template"),
            get("orm"),
            get("rowcount"),
            get("error"),
            record["start_ns"],
            record["end_ns"],
        )

    def add_query_record(
        self,
        sql: str,
        params: Any,
        many: bool,
        batch: int | None,
        alias: str,
        vendor: str,
        atomic: bool,
        savepoint_depth: int,
        stack: int | None,
        template: dict[str, Any] | None,
        orm: dict[str, Any] | None,
        rowcount: int | None,
        error: str | None,
        start_ns: int,
        end_ns: int,
    ) -> int | None:
        """:meth:`add_query` without the dict: what the SQL hook calls for every query.

        Returns the record's index in :attr:`queries` (None: dropped, over ``max_queries``).
        """
        records = self.records
        index = len(records)
        if index >= self.max_queries:
            self.truncated["queries"] = self.truncated.get("queries", 0) + 1
            return None
        leaf_id = self.span_count
        if leaf_id >= self.max_spans:
            self.truncated["spans"] = self.truncated.get("spans", 0) + 1
            leaf_id = None
        else:
            self.span_count = leaf_id + 1
        records.append(
            (
                sql,
                params,
                many,
                batch,
                alias,
                vendor,
                atomic,
                savepoint_depth,
                stack,
                template,
                orm,
                rowcount,
                error,
                start_ns,
                end_ns,
                _open.get(),
                leaf_id,
            )
        )
        self.size_estimate += RECORD_OVERHEAD + len(sql)
        return index

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

    @property
    def instances(self) -> dict[str, int]:
        """Instances created, by model label."""
        counts: dict[str, int] = {}
        for model, count in list(self.instance_counts.items()):
            label = _model_label(model)
            counts[label] = counts.get(label, 0) + count
        return counts

    def stack_memo(self) -> stacks.StackMemo | None:
        """The calling thread's stack memo for this unit (None once the unit has finished)."""
        ident = _get_ident()
        if ident == self.thread_id:
            return self.memo
        memo = self._memos.get(ident)
        if memo is None and not self._finished:
            memo = self._memos.setdefault(ident, stacks.StackMemo())
        return memo

    def finish(self) -> None:
        self.end_ns = time.perf_counter_ns()
        if not self.is_async:
            self.cpu_ns = time.thread_time_ns() - self.cpu_start_ns
        self.close_span(self.root, self.end_ns)
        self._finished = True
        _running.discard(self)
        if self.memo is not None:
            self.memo.clear()
            self.memo = None
        memos, self._memos = self._memos, {}
        for memo in memos.values():
            memo.clear()

    # -- serialization (sender thread) ---------------------------------------------------------
    def _loads(self) -> dict[int, dict[str, Any]]:
        """Per loading query: ``rows`` (instances it built) and ``touched`` (the single-valued
        relations read on them), merged into its ORM context by :meth:`to_message`."""
        loads: dict[int, dict[str, Any]] = {
            index: {"rows": n, "touched": []} for index, n in self.rows.items()
        }
        for index, relation in sorted(self.touched):
            entry = loads.setdefault(index, {"rows": None, "touched": []})
            entry["touched"].append(relation)
        return loads

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

        records = list(self.records)
        loads = self._loads()
        queries = []
        add_query = queries.append
        for index, (
            sql,
            params,
            many,
            batch,
            alias,
            vendor,
            atomic,
            savepoint_depth,
            key,
            template,
            orm,
            rowcount,
            error,
            start,
            end,
            span,
            _leaf,
        ) in enumerate(records):
            if redactor is not None:
                params = redactor(sql, params, many)
            if index in loads and orm is not None:
                orm = {**orm, **loads[index]}
            add_query(
                {
                    "span": span,
                    "alias": alias,
                    "vendor": vendor,
                    "sql": sql,
                    "params": params,
                    "many": many,
                    "batch": batch,
                    "start_ns": start - base,
                    "duration_ns": end - start,
                    "rowcount": rowcount,
                    "atomic": atomic,
                    "savepoint_depth": savepoint_depth,
                    "stack": stack_ref(key),
                    "template": template,
                    "orm": orm,
                    "error": error,
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
        spans = [
            _span_dict(span if span is not None else _query_span(record, ref), base)
            for span, ref, record in _merge_spans(list(self._spans), records)
        ]
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


def _span_dict(s: Span, base: int) -> dict[str, Any]:
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
    return item


def _merge_spans(
    objects: list[Span], records: list[tuple[Any, ...]]
) -> Iterator[tuple[Span | None, int, tuple[Any, ...]]]:
    """Spans in id order: the span objects, and each query's leaf span as (None, ref, record)."""
    i = 0
    count = len(objects)
    for ref, record in enumerate(records):
        leaf_id = record[_Q_LEAF]
        if leaf_id is None:
            continue
        while i < count and objects[i].id < leaf_id:
            yield objects[i], -1, ()
            i += 1
        yield None, ref, record
    for span in objects[i:]:
        yield span, -1, ()


def _query_span(record: tuple[Any, ...], ref: int) -> Span:
    span = Span(record[_Q_LEAF], record[_Q_SPAN], SPAN_SQL, record[_Q_SQL][:60], record[_Q_START])
    span.duration_ns = record[_Q_END] - record[_Q_START]
    span.ref = ref
    return span


def _model_label(model: type) -> str:
    try:
        return model._meta.label  # type: ignore[attr-defined]
    except Exception:
        return getattr(model, "__qualname__", repr(model))


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
