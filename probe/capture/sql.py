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
import time
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.utils import ConnectionHandler

from .. import recorder, stacks
from ..recorder import current_unit
from . import note_error

#: Rows of an ``executemany`` kept for display (the rest are only counted).
MANY_ROWS_KEPT = 3

_perf_ns = time.perf_counter_ns
_capture = stacks.capture_stack
_originals: dict[str, Any] = {}


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
    counter = None
    try:
        connection = context["connection"]
        key, template, orm = _capture(1)
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
            kept = _copy_params(params)
        record = {
            "sql": sql if type(sql) is str else str(sql),
            "params": kept,
            "many": many,
            "batch": batch,
            "alias": connection.alias,
            "vendor": connection.vendor,
            "atomic": connection.in_atomic_block,
            "savepoint_depth": len(connection.savepoint_ids),
            "stack": key,
            "template": template,
            "orm": orm,
            "rowcount": None,
            "error": None,
        }
    except Exception:
        note_error("sql")
        return execute(sql, params, many, context)
    start = _perf_ns()
    try:
        result = execute(sql, params, many, context)
    except Exception as exc:
        end = _perf_ns()
        _finish(unit, record, start, end, counter, context, type(exc).__name__)
        raise
    end = _perf_ns()
    _finish(unit, record, start, end, counter, context, None)
    return result


def _finish(
    unit: recorder.Unit,
    record: dict[str, Any],
    start: int,
    end: int,
    counter: _CountingIter | None,
    context: dict[str, Any],
    error: str | None,
) -> None:
    try:
        record["start_ns"] = start
        record["end_ns"] = end
        record["error"] = error
        if counter is not None:
            record["batch"] = counter.count
        if error is None:
            try:
                rowcount = context["cursor"].rowcount
            except Exception:
                rowcount = None
            record["rowcount"] = rowcount if type(rowcount) is int and rowcount >= 0 else None
        unit.add_query(record)
    except Exception:
        note_error("sql")


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
        queries_before = len(unit.queries)
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
                if statement != "BEGIN" or len(unit.queries) == queries_before:
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
    key, _template, _orm = _capture(2, orm=False)
    unit.add_query(
        {
            "sql": statement,
            "params": None,
            "many": False,
            "batch": None,
            "alias": connection.alias,
            "vendor": connection.vendor,
            "atomic": connection.in_atomic_block,
            "savepoint_depth": len(connection.savepoint_ids),
            "stack": key,
            "template": None,
            "orm": {"op": "transaction", "statement": statement},
            "rowcount": None,
            "error": error,
            "start_ns": start,
            "end_ns": _perf_ns(),
        }
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
