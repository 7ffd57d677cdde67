"""Cache capture: every alias in CACHES, every operation, hit/miss, keys, duration.

Wrappers are set on each backend *instance* (Django makes one per alias per thread): the patched
``CacheHandler.create_connection`` wraps new ones, :func:`install` / :func:`ensure_installed`
wrap the ones this thread already has. Operations: get, set, add, delete, get_many, set_many,
delete_many, get_or_set, incr, decr, has_key, touch, clear, and their ``a*`` async twins.

Verified on Django 5.2: ``BaseCache.aget/aset/aadd/atouch/adelete/aclear`` run the sync method
through ``sync_to_async(self.get)``, but ``aget_many/aget_or_set/ahas_key/aincr/adecr/
aset_many/adelete_many`` are built from the *async* primitives, never from their sync twin. So the
async twins are wrapped too (recording the same op name), which also gives them the caller's
coroutine stack instead of a worker thread's.

One user call is one event. A call made while another recorded call is running in the same
context (``get_or_set`` -> ``get``/``add``/``get``, locmem ``get_many`` -> ``get``, ``aget`` ->
``sync_to_async(get)``) is not recorded; it only tells the outer call whether its first ``get``
found the key. ``get`` is called with a private sentinel default, so a stored ``None`` is a hit.
Hits: ``get``/``has_key``/``touch``/``incr``/``decr``: found or not; ``get_many``: per key;
``get_or_set``: the first inner get found the key (or, on a native ``get_or_set``, a callable
default was not called). Writes have ``hit`` None. Keys are the caller's (before
``make_key``), at most 20 per call and 200 characters each; the session key inside Django's
session-backend cache keys (``django.contrib.sessions.cache<key>``) becomes ``[redacted]``.
``incr``/``decr`` of a missing key record a miss and ``ValueError``, then re-raise.
"""

from __future__ import annotations

import time
import weakref
from contextvars import ContextVar
from itertools import islice
from typing import Any

from django.core.cache import CacheHandler, caches
from django.core.cache.backends.base import BaseCache

from .. import stacks
from ..conf import REDACTED
from ..recorder import current_unit
from . import note_error

SYNC_OPS = (
    "get",
    "set",
    "add",
    "delete",
    "get_many",
    "set_many",
    "delete_many",
    "get_or_set",
    "incr",
    "decr",
    "has_key",
    "touch",
    "clear",
)
ASYNC_OPS = {"a" + op: op for op in SYNC_OPS}
MAX_KEYS = 20
MAX_KEY_LENGTH = 200

_KEY_ARG = frozenset(
    {"get", "set", "add", "delete", "get_or_set", "incr", "decr", "has_key", "touch"}
)
_MARK = "_djangoscope_cache"

_perf_ns = time.perf_counter_ns
_MISSING = object()


class _Call:
    """One recorded call; nested calls in the same context report into it."""

    __slots__ = ("default_called", "first_get")

    def __init__(self) -> None:
        self.first_get: bool | None = None
        self.default_called = False


_active: ContextVar[_Call | None] = ContextVar("djangoscope_cache_call", default=None)
_wrapped: weakref.WeakSet[BaseCache] = weakref.WeakSet()
_originals: dict[str, Any] = {}


#: Django's session backends put the session key in the cache key: never let it out.
_SESSION_PREFIXES = ("django.contrib.sessions.cached_db", "django.contrib.sessions.cache")


def _key_text(key: Any) -> str:
    try:
        text = key if type(key) is str else str(key)
    except Exception:
        return f"<{type(key).__name__}>"
    if "django.contrib.sessions." in text:
        for prefix in _SESSION_PREFIXES:
            at = text.find(prefix)
            if at >= 0:
                text = text[: at + len(prefix)] + REDACTED
                break
    return text if len(text) <= MAX_KEY_LENGTH else text[:MAX_KEY_LENGTH]


def _prepare(op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """(args, kwargs, keys, extra): the call as we will make it.

    ``extra`` is the caller's default for ``get`` and the key count for ``get_many``.
    """
    keys: list[str] = []
    default = _MISSING
    if op in _KEY_ARG:
        key = args[0] if args else kwargs.get("key")
        keys = [_key_text(key)]
        if op == "get":
            if len(args) > 1:
                default = args[1]
                args = (args[0], _MISSING, *args[2:])
            else:
                default = kwargs.pop("default", None) if "default" in kwargs else None
                kwargs["default"] = _MISSING
        elif op == "get_or_set":
            fill = args[1] if len(args) > 1 else kwargs.get("default")
            if callable(fill):
                call = _active.get()

                def tracked(fill: Any = fill, call: Any = call) -> Any:
                    if call is not None:
                        call.default_called = True
                    return fill()

                if len(args) > 1:
                    args = (args[0], tracked, *args[2:])
                else:
                    kwargs["default"] = tracked
    elif op in ("get_many", "delete_many"):
        many = args[0] if args else kwargs.get("keys", ())
        if not isinstance(many, (list, tuple, set, frozenset, dict)):
            many = list(many)  # an iterator: consume once, hand the list on
            if args:
                args = (many, *args[1:])
            else:
                kwargs["keys"] = many
        keys = [_key_text(k) for k in islice(many, MAX_KEYS)]
        default = len(many)
    elif op == "set_many":
        data = args[0] if args else kwargs.get("data", {})
        keys = [_key_text(k) for k in islice(data, MAX_KEYS)]
    return args, kwargs, keys, default


def _outcome(
    op: str, result: Any, default: Any, call: _Call
) -> tuple[Any, bool | None, int | None, int | None]:
    """(value to return, hit, hits, misses)."""
    if op == "get":
        if result is _MISSING:
            return default, False, 0, 1
        return result, True, 1, 0
    if op == "get_many":
        hits = len(result) if hasattr(result, "__len__") else 0
        return result, None, hits, max(0, default - hits)
    if op == "get_or_set":
        if call.first_get is not None:
            hit = call.first_get
        else:
            hit = None if not call.default_called else False
        if hit is None:
            return result, None, None, None
        return result, hit, int(hit), int(not hit)
    if op in ("has_key", "touch"):
        hit = bool(result)
        return result, hit, int(hit), int(not hit)
    if op in ("incr", "decr"):
        return result, True, 1, 0
    return result, None, None, None


def _name(exc: BaseException) -> str:
    return type(exc).__name__


def _nested_get(call: _Call, original: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A get inside another recorded call: not an event, but it tells the outer one hit/miss."""
    if call.first_get is not None:
        return original(*args, **kwargs)
    try:
        args, kwargs, _keys, default = _prepare("get", args, kwargs)
    except Exception:
        note_error("cache")
        return original(*args, **kwargs)
    result = original(*args, **kwargs)
    call.first_get = result is not _MISSING
    return default if result is _MISSING else result


def _record(
    unit: Any,
    alias: str,
    backend: str,
    op: str,
    keys: list[str],
    outcome: tuple[Any, ...] | None,
    start: int,
    end: int,
    stack: tuple[Any, ...],
    error: str | None,
) -> None:
    try:
        if outcome is None:
            hit = hits = misses = None
            if op in ("incr", "decr") and error == "ValueError":
                hit, hits, misses = False, 0, 1
        else:
            _value, hit, hits, misses = outcome
        unit.add_cache(
            {
                "alias": alias,
                "backend": backend,
                "op": op,
                "keys": keys,
                "hit": hit,
                "hits": hits,
                "misses": misses,
                "start_ns": start,
                "end_ns": end,
                "stack": stack[0],
                "template": stack[1],
                "error": error,
            }
        )
    except Exception:
        note_error("cache")


def _sync_wrapper(alias: str, backend: str, op: str, original: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        unit = current_unit.get()
        if unit is None:
            return original(*args, **kwargs)
        outer = _active.get()
        if outer is not None:
            if op == "get":
                return _nested_get(outer, original, args, kwargs)
            return original(*args, **kwargs)
        call = _Call()
        token = _active.set(call)
        try:
            try:
                stack = stacks.capture_stack(1, False, unit.stack_memo())
                args, kwargs, keys, default = _prepare(op, args, kwargs)
            except Exception:
                note_error("cache")
                return original(*args, **kwargs)
            start = _perf_ns()
            try:
                result = original(*args, **kwargs)
            except Exception as exc:
                end = _perf_ns()
                _record(unit, alias, backend, op, keys, None, start, end, stack, _name(exc))
                raise
            end = _perf_ns()
            try:
                outcome = _outcome(op, result, default, call)
            except Exception:
                note_error("cache")
                return default if result is _MISSING else result
            _record(unit, alias, backend, op, keys, outcome, start, end, stack, None)
            return outcome[0]
        finally:
            _active.reset(token)

    wrapper.__djangoscope__ = True  # type: ignore[attr-defined]
    wrapper.__wrapped__ = original  # type: ignore[attr-defined]
    return wrapper


def _async_wrapper(alias: str, backend: str, op: str, original: Any) -> Any:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        unit = current_unit.get()
        if unit is None or _active.get() is not None:
            return await original(*args, **kwargs)
        call = _Call()
        token = _active.set(call)
        try:
            try:
                stack = stacks.capture_stack(1, False, unit.stack_memo())
                args, kwargs, keys, default = _prepare(op, args, kwargs)
            except Exception:
                note_error("cache")
                return await original(*args, **kwargs)
            start = _perf_ns()
            try:
                result = await original(*args, **kwargs)
            except Exception as exc:
                end = _perf_ns()
                _record(unit, alias, backend, op, keys, None, start, end, stack, _name(exc))
                raise
            end = _perf_ns()
            try:
                outcome = _outcome(op, result, default, call)
            except Exception:
                note_error("cache")
                return default if result is _MISSING else result
            _record(unit, alias, backend, op, keys, outcome, start, end, stack, None)
            return outcome[0]
        finally:
            _active.reset(token)

    wrapper.__djangoscope__ = True  # type: ignore[attr-defined]
    wrapper.__wrapped__ = original  # type: ignore[attr-defined]
    return wrapper


def wrap(cache: BaseCache, alias: str) -> None:
    """Give one backend instance its recording wrappers (idempotent)."""
    if cache.__dict__.get(_MARK):
        return
    backend = type(cache).__name__
    for op in SYNC_OPS:
        original = getattr(cache, op, None)
        if original is not None:
            cache.__dict__[op] = _sync_wrapper(alias, backend, op, original)
    for name, op in ASYNC_OPS.items():
        original = getattr(cache, name, None)
        if original is not None:
            cache.__dict__[name] = _async_wrapper(alias, backend, op, original)
    cache.__dict__[_MARK] = alias
    _wrapped.add(cache)


def unwrap(cache: BaseCache) -> None:
    if not cache.__dict__.pop(_MARK, None):
        return
    for name in (*SYNC_OPS, *ASYNC_OPS):
        current = cache.__dict__.get(name)
        if getattr(current, "__djangoscope__", False):
            del cache.__dict__[name]


def _initialized() -> list[tuple[str, BaseCache]]:
    local = caches._connections
    found = []
    for alias in caches:
        instance = getattr(local, alias, None)
        if instance is not None:
            found.append((alias, instance))
    return found


def ensure_installed() -> None:
    """Wrap this thread's already-created cache backends (cheap; called per request)."""
    for alias, instance in _initialized():
        if not instance.__dict__.get(_MARK):
            try:
                wrap(instance, alias)
            except Exception:
                note_error("cache")


def _create_connection(self: CacheHandler, alias: str) -> BaseCache:
    instance = _originals["create_connection"](self, alias)
    try:
        wrap(instance, alias)
    except Exception:
        note_error("cache")
    return instance


_create_connection.__djangoscope__ = True  # type: ignore[attr-defined]


def install() -> None:
    current = CacheHandler.create_connection
    if not getattr(current, "__djangoscope__", False):
        _originals["create_connection"] = current
        CacheHandler.create_connection = _create_connection  # type: ignore[method-assign]
    ensure_installed()


def uninstall() -> None:
    if "create_connection" in _originals and getattr(
        CacheHandler.create_connection, "__djangoscope__", False
    ):
        CacheHandler.create_connection = _originals["create_connection"]  # type: ignore[method-assign]
    for instance in list(_wrapped):
        unwrap(instance)
