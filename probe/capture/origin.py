"""Where a root queryset was built, and which query loaded a model instance.

The analysis names the fix site of an N+1 (the line that built the owners' queryset) and the
query that loaded the owner. Two light hooks record that, inside a unit of work only:

- **Creation site.** ``BaseManager.get_queryset`` is wrapped: a queryset a manager makes
  inside a unit (``Book.objects.filter(...)``, ``Model.objects.all()``, a ``get_queryset``
  override calling ``super()``) gets the first app frame of the stack, as
  ``{"file", "line", "func"}``, in its ``Query`` object's ``__dict__`` (:data:`SITE`). Not in
  ``QuerySet._hints``: that dict is the manager's own, shared by every queryset it makes.
  ``QuerySet._clone()``/``_chain()`` build the derived queryset's query with ``Query.chain()``,
  which copies the query's ``__dict__``: ``.filter().order_by().select_related()`` keep the
  site at no cost per clone. Related managers' querysets (``author.books.all()``, a lazy
  foreign key's ``get()``) are not roots: they get no site. The value is plain JSON-safe data,
  so a queryset stays picklable.
- **Instance origin.** When a query runs inside ``ModelIterable.__iter__`` (the rows of a
  queryset being turned into instances), the SQL hook maps ``id()`` of that generator's frame to
  ``(unit.id, query index)`` in ``Unit.loaders``. The ``Model.__init__`` wrapper (models.py),
  when ``Model.from_db`` called it, hops a few ``f_back`` links to that frame (through
  ``RelatedPopulator.populate`` for ``select_related`` instances) and stores the pair in the
  instance's ``__dict__`` (:data:`ORIGIN`). Keyed by the frame, not by "the last SELECT": rows of
  ``.iterator()`` are built lazily while other queries (the N+1 itself) run between them. A
  frame id can only be reused after the frame died, and a new ``ModelIterable`` frame registers
  its own SELECT before it builds any instance. :func:`origin_of` accepts the pair only when
  its ``unit.id`` is the current unit's string object itself (``is``): an instance cached across
  requests, or pickled and loaded anywhere, resolves to nothing.

Outside a unit both hooks cost one ContextVar read.
"""

from __future__ import annotations

import functools
import sys
from types import CodeType, FrameType
from typing import Any

from django.db.models import Model
from django.db.models.fields.mixins import FieldCacheMixin
from django.db.models.manager import BaseManager, Manager
from django.db.models.query import ModelIterable, QuerySet, RelatedPopulator
from django.db.models.sql.compiler import SQLCompiler

from .. import stacks
from ..recorder import Unit, current_unit
from . import note_error

#: Key of the creation site in a ``Query``'s ``__dict__``.
SITE = "_djangoscope_site"
#: Key of ``(unit.id, query index)`` in a model instance's ``__dict__``.
ORIGIN = "_djangoscope_origin"
#: Key of the row values an instance was loaded with (``from_db``'s positional args).
LOADED = "_djangoscope_loaded"

_getframe = sys._getframe

#: Code objects the hooks recognize frames by.
ITER_CODE: CodeType = ModelIterable.__iter__.__code__
FROM_DB_CODE: CodeType = Model.from_db.__func__.__code__  # type: ignore[attr-defined]
POPULATE_CODE: CodeType = RelatedPopulator.populate.__code__
EXECUTE_SQL_CODE: CodeType = SQLCompiler.execute_sql.__code__
#: Frames that call ``prefetch_related_objects`` for a root queryset (``self``).
PREFETCH_CALLERS: frozenset[CodeType] = frozenset(
    code
    for code in (
        getattr(QuerySet.__dict__.get("_prefetch_related_objects"), "__code__", None),
        getattr(QuerySet.__dict__.get("_iterator"), "__code__", None),
    )
    if code is not None
)

#: What calls ``get_queryset`` for ``Book.objects.filter(...)`` and ``Book.objects.all()``.
_MANAGER_METHOD_CODE: CodeType | None = getattr(getattr(Manager, "filter", None), "__code__", None)
_MANAGER_ALL_CODE: CodeType = BaseManager.all.__code__
_first_app_site = stacks.first_app_site

#: Frames from the SQL hook to ``SQLCompiler.execute_sql`` (cursor wrappers in between).
_MAX_SQL_HOPS = 10
#: Frames from ``Model.__init__``'s caller to ``ModelIterable.__iter__``: ``__init__``
#: overrides, ``from_db`` overrides, nested ``RelatedPopulator.populate`` calls.
_MAX_INIT_HOPS = 4
_MAX_ITER_HOPS = 8
#: Frames searched for the app frame that built a queryset.
_MAX_SITE_HOPS = 100


def loader_frame(depth: int) -> FrameType | None:
    """The ``ModelIterable.__iter__`` frame whose ``execute_sql()`` runs the current query.

    ``depth``: how far the SQL hook's caller is from this function's caller. Only the
    iterator that called ``execute_sql`` directly counts: a query that an ``__init__`` or a
    ``post_init`` receiver runs while that iterator builds its rows is not its SELECT. The
    cursor wrappers in between are the same for every query of a process, so the depth where
    ``execute_sql`` was found last time is tried first.
    """
    global _sql_depth
    hint = _sql_depth
    try:
        frame: FrameType | None = _getframe(hint)
    except ValueError:
        frame = None
    if frame is None or frame.f_code is not EXECUTE_SQL_CODE:
        frame = _getframe(depth + 1)
        hint = depth + 1
        while frame is not None and frame.f_code is not EXECUTE_SQL_CODE:
            if hint > depth + _MAX_SQL_HOPS:
                return None
            frame = frame.f_back
            hint += 1
        if frame is None:
            return None
        _sql_depth = hint
    caller = frame.f_back
    if caller is not None and caller.f_code.co_name == "execute_sql":
        caller = caller.f_back  # a backend compiler's override, calling super()
    if caller is not None and caller.f_code is ITER_CODE:
        return caller
    return None


#: Where ``loader_frame`` found ``execute_sql`` last (a ``sys._getframe`` depth).
_sql_depth = 4


def register(unit: Unit, frame: FrameType, index: int | None) -> None:
    """Instances ``frame`` builds from now on were loaded by query ``index`` of ``unit``."""
    if index is None:  # the record was dropped (over the cap): nothing to point at
        unit.loaders.pop(id(frame), None)
    else:
        unit.loaders[id(frame)] = (unit.id, index)


def loaded_by(frame: FrameType, loaders: dict[int, tuple[str, int]]) -> tuple[str, int] | None:
    """The registered ``(unit.id, index)`` of the iterator building an instance, if any.

    ``frame`` is the caller of ``Model.__init__``. Only instances that ``Model.from_db`` made
    for a ``ModelIterable`` (directly or through ``RelatedPopulator.populate``) have one.
    """
    code = frame.f_code
    hops = 0
    while code is not FROM_DB_CODE:  # a subclass's __init__ calling super().__init__()
        if hops == _MAX_INIT_HOPS or code.co_name != "__init__":
            return None
        back = frame.f_back
        if back is None:
            return None
        frame = back
        code = frame.f_code
        hops += 1
    back = frame.f_back
    for _ in range(_MAX_ITER_HOPS):
        if back is None:
            return None
        code = back.f_code
        if code is ITER_CODE:
            return loaders.get(id(back))
        if code is not POPULATE_CODE and code.co_name != "from_db":
            return None
        back = back.f_back
    return None


def origin_of(instance: Any) -> int | None:
    """The index, in the current unit, of the query that loaded ``instance`` (None: unknown)."""
    state = getattr(instance, "__dict__", None)
    value = state.get(ORIGIN) if state is not None else None
    if value is None:
        return None
    unit = current_unit.get()
    if unit is None or type(value) is not tuple or len(value) != 2 or value[0] is not unit.id:
        return None
    return value[1]  # type: ignore[no-any-return]


def site_of(queryset: Any) -> dict[str, Any] | None:
    """The creation site of ``queryset``'s root (None: made outside a unit, or not a root)."""
    query = getattr(queryset, "_query", None)
    state = getattr(query, "__dict__", None)
    return state.get(SITE) if state is not None else None


def _wrap_get_queryset(original: Any) -> Any:
    @functools.wraps(original)
    def get_queryset(self: BaseManager[Any]) -> QuerySet[Any]:
        queryset = original(self)
        if current_unit.get() is not None:
            try:
                # Related managers carry their owner (``instance``, or ``_hints`` for the
                # managers behind lazy foreign keys and refresh_from_db): not a root.
                if not self._hints and "instance" not in self.__dict__:
                    frame = _getframe(1)
                    code = frame.f_code
                    if code is _MANAGER_METHOD_CODE or code is _MANAGER_ALL_CODE:
                        frame = frame.f_back  # the usual callers, never app code: skip a lookup
                    site = _first_app_site(frame, _MAX_SITE_HOPS)
                    if site is not None:
                        try:
                            queryset._query._djangoscope_site = site  # SITE
                        except AttributeError:
                            pass  # a custom manager's get_queryset() made no QuerySet
            except Exception:
                note_error("origin")
        return queryset

    get_queryset.__djangoscope__ = True  # type: ignore[attr-defined]
    return get_queryset


def _wrap_get_cached_value(original: Any) -> Any:
    """``FieldCacheMixin.get_cached_value``, noting which loaded instances had a single-valued
    relation read (``Unit.touched``): a ``select_related`` path that no row of a request ever
    reads is an unused join, and reads served from the cache run no query to see them by.

    Not the descriptors' ``__get__``: a wrapper there would sit on the stack of every lazy
    load's query and cost the stack walk its memo (measured: +15 µs per query). The
    descriptors ask the cache first and load only after it answered, so this frame is gone by
    the time a lazy query runs.
    """

    @functools.wraps(original)
    def get_cached_value(self: Any, instance: Any, *args: Any, **kwargs: Any) -> Any:
        unit = current_unit.get()
        if unit is not None:
            try:
                origin = instance.__dict__.get(ORIGIN)
                if origin is not None and origin[0] is unit.id:
                    unit.touched.add((origin[1], cache_name(self)))
            except Exception:
                note_error("origin")
        return original(self, instance, *args, **kwargs)

    get_cached_value.__djangoscope__ = True  # type: ignore[attr-defined]
    return get_cached_value


def cache_name(field: Any) -> str:
    """The key of a relation in an instance's ``_state.fields_cache`` (and prefetch cache)."""
    try:
        return field.cache_name  # type: ignore[no-any-return]  # Django >= 5.1
    except AttributeError:
        return field.get_cache_name()  # type: ignore[no-any-return]  # Django 4.2 / 5.0


#: (class, attribute, wrapper factory) of every hook this module installs.
_TARGETS: tuple[tuple[type, str, Any], ...] = (
    (BaseManager, "get_queryset", _wrap_get_queryset),
    (FieldCacheMixin, "get_cached_value", _wrap_get_cached_value),
)


def install() -> None:
    """Wrap ``BaseManager.get_queryset`` and ``FieldCacheMixin.get_cached_value``
    (idempotent)."""
    for owner, name, wrap in _TARGETS:
        current = owner.__dict__[name]
        if not getattr(current, "__djangoscope__", False):
            setattr(owner, name, wrap(current))


def uninstall() -> None:
    """Restore each wrapped function unless someone wrapped it since."""
    for owner, name, _ in _TARGETS:
        current = owner.__dict__[name]
        if getattr(current, "__djangoscope__", False):
            setattr(owner, name, current.__wrapped__)
