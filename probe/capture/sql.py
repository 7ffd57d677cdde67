"""SQL capture through ``connection.execute_wrappers``, and transaction spans.

The wrapper sits on every connection of every alias: connections made after install get it from
a patched ``ConnectionHandler.create_connection``; the ones this thread already had get it from
:func:`install` / :func:`ensure_installed`. It goes first in ``execute_wrappers`` so a user's
``with connection.execute_wrapper(...)`` (which pops the last one) never removes it. Raw cursors
and savepoints go through ``cursor.execute`` too, so they are captured like ORM queries.

``BEGIN``/``COMMIT``/``ROLLBACK`` issued through the connection API (``commit()``,
``rollback()``, ``set_autocommit(False)``) are spans of kind ``transaction`` named e.g.
``"COMMIT default"``, not queries. On SQLite, ``atomic()`` starts its transaction with a real
``cursor.execute("BEGIN")``: that one is also a query (nested in the ``BEGIN`` span), as it is in
Django's own ``connection.queries``.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper
from django.db.utils import ConnectionHandler

from .. import recorder, stacks
from ..recorder import current_unit
from . import note_error
from .origin import loader_frame, register

#: Rows of an ``executemany`` kept for display (the rest are only counted).
MANY_ROWS_KEPT = 3

_perf_ns = time.perf_counter_ns
_capture = stacks.capture_stack
_get_ident = threading.get_ident
_originals: dict[str, Any] = {}
#: Django's own cursor wrappers: ``rowcount`` is their DB-API cursor's (``__getattr__``).
_PLAIN_CURSORS = frozenset({CursorWrapper, CursorDebugWrapper})


class _CountingIter:
    """Feeds an ``executemany`` generator to the driver while counting it: never consumed by us."""

    __slots__ = ("count", "first", "source")

    def __init__(self, source: Any):
        self.source = iter(source)
        self.count = 0
        self.first: list[Any] = []

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        row = next(self.source)
        if self.count < MANY_ROWS_KEPT:
            self.first.append(_copy_row(row))
        self.count += 1
        return row


def _copy_row(row: Any) -> Any:
    kind = type(row)
    if kind is tuple:
        return row
    if kind is list:
        return tuple(row)
    if isinstance(row, dict):
        return dict(row)
    return row


def _copy_params(params: Any) -> Any:
    """Shallow copy of single-statement params, never consuming an iterator."""
    if params is None or type(params) is tuple:
        return params
    if isinstance(params, (list, tuple)):
        return tuple(params)
    if isinstance(params, dict):
        return dict(params)
    try:
        if iter(params) is params:
            return None
        return tuple(params)
    except TypeError:
        return None


def execute_wrapper(
    execute: Callable[..., Any], sql: Any, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    """The ``execute_wrapper`` hook: records one query into the current unit, if any."""
    unit = current_unit.get()
    if unit is None:
        return execute(sql, params, many, context)
    counter = loader = None
    try:
        connection = context["connection"]
        memo = unit.memo if unit.thread_id == _get_ident() else unit.stack_memo()
        key, template, orm = _capture(1, True, memo)
        # A queryset's SELECT: the instances its iterator builds point at this record.
        loader = loader_frame(1)
        batch = None
        if many:
            if isinstance(params, (list, tuple)):
                batch = len(params)
                kept = [_copy_row(r) for r in params[:MANY_ROWS_KEPT]]
            elif hasattr(params, "__len__") and iter(params) is not params:
                batch = len(params)
                kept = [_copy_row(r) for r in islice(params, MANY_ROWS_KEPT)]
            else:
                counter = params = _CountingIter(params)
                kept = counter.first
        else:
            kept = params if type(params) is tuple else _copy_params(params)
        text = sql if type(sql) is str else str(sql)
        alias = connection.alias
        vendor = connection.vendor
        atomic = connection.in_atomic_block
        depth = len(connection.savepoint_ids)
    except Exception:
        note_error("sql")
        if loader is not None:
            unit.loaders.pop(id(loader), None)
        return execute(sql, params, many, context)
    start = _perf_ns()
    try:
        result = execute(sql, params, many, context)
    except Exception as exc:
        end = _perf_ns()
        try:
            if counter is not None:
                batch = counter.count
            index = unit.add_query_record(
                text, kept, many, batch, alias, vendor, atomic, depth, key, template, orm,
                None, type(exc).__name__, start, end,
            )  # fmt: skip
            if loader is not None:
                register(unit, loader, index)
        except Exception:
            note_error("sql")
        raise
    end = _perf_ns()
    try:
        if counter is not None:
            batch = counter.count
        try:
            cursor = context["cursor"]
            if type(cursor) in _PLAIN_CURSORS:
                cursor = cursor.cursor  # what their __getattr__ would read rowcount from
            rowcount = cursor.rowcount
            if type(rowcount) is not int or rowcount < 0:
                rowcount = None
        except Exception:
            rowcount = None
        index = unit.add_query_record(
            text, kept, many, batch, alias, vendor, atomic, depth, key, template, orm,
            rowcount, None, start, end,
        )  # fmt: skip
        if loader is not None:
            register(unit, loader, index)
    except Exception:
        note_error("sql")
        if loader is not None:
            unit.loaders.pop(id(loader), None)
    return result


def attach(connection: BaseDatabaseWrapper) -> None:
    """Put the wrapper first on one connection (no-op when already there)."""
    wrappers = connection.execute_wrappers
    if execute_wrapper not in wrappers:
        wrappers.insert(0, execute_wrapper)


def detach(connection: BaseDatabaseWrapper) -> None:
    while execute_wrapper in connection.execute_wrappers:
        connection.execute_wrappers.remove(execute_wrapper)


def ensure_installed() -> None:
    """Attach to this thread's already-open connections (cheap; called per request)."""
    for connection in connections.all(initialized_only=True):
        if execute_wrapper not in connection.execute_wrappers:
            connection.execute_wrappers.insert(0, execute_wrapper)


# -- hooks on classes --------------------------------------------------------------------------


def _create_connection(self: ConnectionHandler, alias: str) -> BaseDatabaseWrapper:
    connection = _originals["create_connection"](self, alias)
    try:
        attach(connection)
    except Exception:
        note_error("sql")
    return connection


_create_connection.__djangoscope__ = True  # type: ignore[attr-defined]


def _transaction(statement: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap commit/rollback/set_autocommit: a transaction span plus, where Django logs the
    statement in ``connection.queries`` without running it through a cursor, a query record,
    so a unit's queries are exactly the ones Django itself counts.
    """

    @functools.wraps(original)
    def wrapper(self: BaseDatabaseWrapper, *args: Any, **kwargs: Any) -> Any:
        unit = current_unit.get()
        if unit is None:
            return original(self, *args, **kwargs)
        if statement == "BEGIN":
            autocommit = args[0] if args else kwargs.get("autocommit", True)
            if autocommit:
                return original(self, *args, **kwargs)
        span = None
        queries_before = len(unit.records)
        start = _perf_ns()
        error = None
        try:
            span = unit.open_span(recorder.SPAN_TRANSACTION, f"{statement} {self.alias}")
            if span is not None:
                span.meta = {"alias": self.alias, "statement": statement}
        except Exception:
            note_error("transaction")
        try:
            return original(self, *args, **kwargs)
        except Exception as exc:
            error = type(exc).__name__
            if span is not None and span.meta is not None:
                span.meta["error"] = error
            raise
        finally:
            try:
                # SQLite's BEGIN goes through a cursor (already recorded); COMMIT, ROLLBACK
                # and other backends' BEGIN do not, yet Django logs them as queries.
                if statement != "BEGIN" or len(unit.records) == queries_before:
                    _record_statement(unit, self, statement, start, error)
                unit.close_span(span)
            except Exception:
                note_error("transaction")

    wrapper.__djangoscope__ = True  # type: ignore[attr-defined]
    return wrapper


def _record_statement(
    unit: recorder.Unit,
    connection: BaseDatabaseWrapper,
    statement: str,
    start: int,
    error: str | None,
) -> None:
    key, _template, _orm = _capture(2, False, unit.stack_memo())
    unit.add_query_record(
        statement,
        None,
        False,
        None,
        connection.alias,
        connection.vendor,
        connection.in_atomic_block,
        len(connection.savepoint_ids),
        key,
        None,
        {"op": "transaction", "statement": statement},
        None,
        error,
        start,
        _perf_ns(),
    )


def _is_ours(function: Any) -> bool:
    return bool(getattr(function, "__djangoscope__", False))


_TRANSACTION_METHODS = {"commit": "COMMIT", "rollback": "ROLLBACK", "set_autocommit": "BEGIN"}


def install() -> None:
    """Patch connection creation and transaction methods; attach to open connections."""
    current = ConnectionHandler.create_connection
    if not getattr(current, "__djangoscope__", False):
        _originals["create_connection"] = current
        ConnectionHandler.create_connection = _create_connection  # type: ignore[method-assign]
    for name, statement in _TRANSACTION_METHODS.items():
        method = BaseDatabaseWrapper.__dict__[name]
        if not getattr(method, "__djangoscope__", False):
            _originals[name] = method
            setattr(BaseDatabaseWrapper, name, _transaction(statement, method))
    ensure_installed()


def uninstall() -> None:
    handler = ConnectionHandler
    if "create_connection" in _originals and _is_ours(handler.create_connection):
        handler.create_connection = _originals["create_connection"]  # type: ignore[method-assign]
    for name in _TRANSACTION_METHODS:
        if name in _originals and _is_ours(BaseDatabaseWrapper.__dict__[name]):
            setattr(BaseDatabaseWrapper, name, _originals[name])
    for connection in connections.all(initialized_only=True):
        detach(connection)
