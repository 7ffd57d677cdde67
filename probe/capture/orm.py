"""What the ORM was doing when a query ran, read from frame locals (no ORM patching).

The table :data:`SIGNATURES` lists Django functions whose frames identify an ORM operation, with
the Django versions they apply to. At install each row is resolved to its code object (rows that
do not exist in the running Django are skipped), and :mod:`stacks` marks matching frames while
it walks the stack. Only frames between the query and the first app frame count, and only the
locals of frames that matched are read. When several match, the lowest priority number wins
(ties: the innermost frame), and a reader that cannot make sense of its frame yields to the next:

    deferred (0) > fk / reverse_o2o (1) > related_manager (2) > prefetch (3, 4)
    > bulk_create / bulk_update (5) > save / insert / delete / update (6) > queryset (7)
    > related_fetch (8) > fetch (9)

The result is a small JSON-safe dict; every one has ``op`` and ``model`` (the model label of the
owner instance or the queryset). By op:

- ``deferred``: ``field`` (the deferred field read), ``instance`` (``"app.Model:pk"``; when
  the pk column is sensitive, e.g. a session key, ``"app.Model:[redacted]#<hash>"``).
- ``fk``: ``field``, ``target`` (related model), ``relation`` (``"fk"`` or ``"o2o"``), ``instance``.
- ``reverse_o2o``: ``field`` (the accessor, e.g. ``profile``), ``target``, ``instance``.
- ``related_manager``: ``method`` (count/exists/first/filter/create...), ``field`` (accessor),
  ``target``, ``kind`` (``reverse_fk``/``m2m``/``generic``), ``prefetched`` (the owner already has
  a prefetch cache for the accessor), ``instance``, and ``remote`` (the lookup by which the
  target filters by its owner: ``author`` for ``author.books``; reverse FK and many-to-many).
- ``prefetch``: ``lookup`` (the path prefetched at this level, e.g. ``books`` then
  ``books__tags``, or a ``to_attr``; None when ``get_prefetch_querysets`` was called directly),
  ``field`` (the relation followed at this level), ``count`` (instances prefetched for).
- Any query that loaded tagged instances also gets, when serialized, ``rows`` (instances it
  built) and ``touched`` (sorted single-valued relations read on them in the unit).
- ``save``: ``update_fields`` (sorted list or None), ``instance``; for a full-row save of an
  instance loaded in this unit also ``changed`` (the fields whose value differs from the row it
  was loaded with, ``auto_now`` ones included) and ``deltas`` (new - old of the numeric changed
  fields, sensitive columns excepted). ``insert``: ``instance`` (None
  until the pk is known). ``delete``: ``instance`` or ``bulk: True`` for ``QuerySet.delete``.
- ``bulk_create``: ``count``. ``bulk_update``: ``fields``, ``count``. ``update``: ``fields``.
- ``queryset``: ``method`` (count/exists/get/first/last/in_bulk/aggregate/iterator/...).
  The same methods on a queryset derived from a related manager (``a.books.filter(...)
  .count()``) give ``related_manager`` with that method and ``filtered``/``limited``.
- ``related_fetch``: iterating a related manager's queryset: ``field``, ``target``, ``kind``,
  ``prefetched``, ``filtered`` (extra WHERE beyond the relation), ``limited`` (sliced),
  ``instance``.
- ``fetch``: the SELECT a ``ModelIterable`` runs for a root queryset (iteration, ``list()``,
  ``len()``, ``qs[0]``, a template's ``{% for %}`` over ``Book.objects.filter(...)``) when no
  other op applies (``get()``/``first()``/``iterator()``... stay ``queryset``, a related
  manager's stays ``related_fetch``, a prefetch's ``prefetch``): ``site``, ``select_related``
  (the lookup paths, e.g. ``["author", "author__profile"]``; for a bare ``select_related()``
  the foreign keys it joined; the key is omitted without ``select_related``). ``.values()``
  and other non-model iterables have no context.

Where the fix goes and which query loaded the owner (see origin.py):

- ``site``: ``{"file", "line", "func"}`` of the first app frame when a manager built the root
  queryset (``Book.objects.filter(...)``, a ``get_queryset()`` override calling one), kept
  through ``.filter().order_by().select_related()``; None when it was built outside a unit
  (an import-time ``queryset = Book.objects.all()``, say), by a related manager, or with no
  app frame on the stack. ``fetch`` always has the key; ``prefetch`` has it (the site of the
  root queryset whose evaluation ran the prefetch) only when known, i.e. not for
  ``prefetch_related_objects()`` called directly.
- ``origin``: on ``fk``, ``reverse_o2o``, ``related_manager``, ``related_fetch`` and
  ``deferred``, the index in this unit's queries (``Unit.queries``, the ``queries`` list of
  ``Unit.to_message``, same order) of the query that loaded the owner instance: the ``fetch``,
  ``queryset`` (``get()``, ``iterator()``...), ``prefetch`` or ``fk`` query whose rows built it,
  ``select_related`` instances included. Omitted when unknown: the instance was built in code,
  loaded outside this unit (before it, in another request, from a cache), or by raw SQL.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any, NamedTuple

import django
from django.db.models import Model
from django.db.models.base import DEFERRED

from .. import stacks
from ..conf import REDACTED
from . import note_error
from .origin import LOADED, PREFETCH_CALLERS, SITE, origin_of, site_of
from .origin import cache_name as _cache_name
from .redact import make_sensitive_check


class Row(NamedTuple):
    """One signature: a Django function, the versions it applies to, how to read it."""

    module: str
    qualname: str
    reader: str
    priority: int
    method: str | None = None
    since: tuple[int, int] = (4, 2)
    until: tuple[int, int] | None = None  # exclusive


_RD = "django.db.models.fields.related_descriptors"
_M2M = "create_forward_many_to_many_manager.<locals>.ManyRelatedManager"
_RFK = "create_reverse_many_to_one_manager.<locals>.RelatedManager"
_Q = "django.db.models.query"
_B = "django.db.models.base"

SIGNATURES: tuple[Row, ...] = (
    Row("django.db.models.query_utils", "DeferredAttribute.__get__", "deferred", 0),
    Row(_RD, "ForwardManyToOneDescriptor.__get__", "fk", 1),
    Row(_RD, "ForwardManyToOneDescriptor.get_object", "fk", 1),
    Row(_RD, "ForwardOneToOneDescriptor.get_object", "fk", 1),
    Row(_RD, "ReverseOneToOneDescriptor.__get__", "reverse_o2o", 1),
    Row(
        "django.db.models.manager",
        "BaseManager._get_queryset_methods.<locals>.create_method.<locals>.manager_method",
        "related_manager",
        2,
    ),
    # Django 5.0 gave many-to-many managers their own count()/exists() (through-table only);
    # on 4.2 they are manager_method like the rest.
    Row(_RD, f"{_M2M}.count", "related_manager", 2, "count", since=(5, 0)),
    Row(_RD, f"{_M2M}.exists", "related_manager", 2, "exists", since=(5, 0)),
    Row(_Q, "prefetch_one_level", "prefetch", 3),
    # Renamed in Django 5.0 (the old name stays, deprecated, and calls the new one).
    *(
        Row(_RD, f"{owner}.get_prefetch_queryset", "prefetch_queryset", 4, until=(5, 0))
        for owner in ("ForwardManyToOneDescriptor", "ReverseOneToOneDescriptor", _RFK, _M2M)
    ),
    *(
        Row(_RD, f"{owner}.get_prefetch_querysets", "prefetch_queryset", 4, since=(5, 0))
        for owner in ("ForwardManyToOneDescriptor", "ReverseOneToOneDescriptor", _RFK, _M2M)
    ),
    Row(_B, "Model.save_base", "save", 6),
    Row(_B, "Model._do_update", "save", 6),
    Row(_B, "Model._do_insert", "insert", 6),
    Row(_B, "Model.delete", "delete", 6),
    Row(_Q, "QuerySet.delete", "delete", 6, "bulk"),
    Row(_Q, "QuerySet.bulk_create", "bulk_create", 5),
    Row(_Q, "QuerySet.bulk_update", "bulk_update", 5),
    Row(_Q, "QuerySet.update", "update", 6),
    *(
        Row(_Q, f"QuerySet.{name}", "queryset", 7, name)
        for name in (
            "count",
            "exists",
            "get",
            "first",
            "last",
            "in_bulk",
            "aggregate",
            "iterator",
            "earliest",
            "latest",
            "contains",
        )
    ),
    # QuerySet.iterator() returns the _iterator() generator: that is the frame that queries.
    Row(_Q, "QuerySet._iterator", "queryset", 7, "iterator"),
    Row(_Q, "QuerySet._fetch_all", "related_fetch", 8),
    Row(_Q, "ModelIterable.__iter__", "fetch", 9),
)


#: A frame's locals, and what a reader makes of them (None: "not mine, ask the next frame").
Locals = dict[str, Any]
Context = dict[str, Any] | None


class Signature:
    """A resolved row: what stacks.py stores for a matching code object."""

    __slots__ = ("method", "priority", "read", "reader")

    def __init__(self, row: Row, read: Callable[[Locals, Signature, FrameType], Context]):
        self.reader = row.reader
        self.priority = row.priority
        self.method = row.method
        self.read = read


# Per-process caches of what never changes for a model class, a field or a relation once the
# app registry is ready (readers run on every query). Keyed by the object itself, or by id()
# with the object kept in the value (relations define __eq__/__hash__ on their contents).
_labels: dict[Any, str] = {}


def _label(model: Any) -> str | None:
    try:
        label = _labels.get(model)
    except TypeError:  # unhashable: not a model class
        label = None
    if label is None:
        meta = getattr(model, "_meta", None)
        if meta is None:
            return None
        label = meta.label
        if isinstance(model, type):
            _labels[model] = label
    return label


#: model -> (label, pk column is sensitive, pk attname or None when ``pk`` is not Django's own
#: property, e.g. a composite primary key's).
_sensitive_pk: dict[type, tuple[str, bool, str | None]] = {}
_is_sensitive: Callable[[str | None], bool] = lambda column: False  # noqa: E731
_PK_PROPERTY = Model.__dict__["pk"]


def _ident(obj: Any) -> str | None:
    """``"app.Model:pk"``; a pk whose column is sensitive (a session key) is hashed instead."""
    model = type(obj)
    known = _sensitive_pk.get(model)
    if known is None:
        meta = obj._meta
        attname = meta.pk.attname if getattr(model, "pk", None) is _PK_PROPERTY else None
        known = _sensitive_pk[model] = (meta.label, _is_sensitive(meta.pk.column), attname)
    # Model.pk is getattr(obj, obj._meta.pk.attname): read that directly when pk is Django's.
    pk = obj.pk if known[2] is None else getattr(obj, known[2])
    if pk is None:
        return None
    if known[1]:
        return f"{known[0]}:{REDACTED}#{hash(pk) & 0xFFFFFFFF:08x}"
    return f"{known[0]}:{pk}"


def _with_origin(context: dict[str, Any], instance: Any) -> dict[str, Any]:
    """``context`` with ``origin``: the query of this unit that loaded ``instance``, if known."""
    origin = origin_of(instance)
    if origin is not None:
        context["origin"] = origin
    return context


def _prefetched(instance: Any, cache_name: str | None) -> bool:
    cache = getattr(instance, "_prefetched_objects_cache", None)
    return bool(cache) and cache_name in cache


def _manager_relation(manager: Any) -> tuple[str, str, str] | None:
    """(accessor, prefetch cache name, kind) of a related manager."""
    if hasattr(manager, "prefetch_cache_name"):
        reverse = getattr(manager, "reverse", None)
        if reverse is None:
            return manager.prefetch_cache_name, manager.prefetch_cache_name, "generic"
        if not reverse:
            return manager.prefetch_cache_name, manager.prefetch_cache_name, "m2m"
        field = manager.model._meta.get_field(manager.query_field_name)
        return field.remote_field.get_accessor_name(), manager.prefetch_cache_name, "m2m"
    field = getattr(manager, "field", None)
    if field is None:
        return None
    rel = field.remote_field
    return rel.get_accessor_name(), _cache_name(rel), "reverse_fk"


#: owner model -> target model -> [(accessor, prefetch cache name, through table)].
_m2m_candidates: dict[type, dict[type, list[tuple[str, str, str]]]] = {}


def _m2m_relation(owner: type, target: type, qs: Any) -> tuple[str, str] | None:
    """The many-to-many accessor joining owner to target (through table breaks ties)."""
    by_target = _m2m_candidates.get(owner)
    if by_target is None:
        by_target = _m2m_candidates[owner] = {}
    found = by_target.get(target)
    if found is None:
        found = []
        for field in owner._meta.many_to_many:
            if field.related_model is target:
                through = field.remote_field.through._meta.db_table
                found.append((field.name, field.name, through))
        for rel in owner._meta.related_objects:
            if rel.many_to_many and rel.related_model is target:
                through = rel.through._meta.db_table
                found.append((rel.get_accessor_name(), rel.field.related_query_name(), through))
        by_target[target] = found
    if not found:
        return None
    if len(found) > 1:
        tables = {getattr(j, "table_name", None) for j in qs.query.alias_map.values()}
        for accessor, cache, through in found:
            if through in tables:
                return accessor, cache
    return found[0][0], found[0][1]


# -- readers: f_locals -> context dict (or None: "not mine, ask the next frame") --------------


def _deferred(loc: Locals, sig: Signature, frame: FrameType) -> Context:
    instance, descriptor = loc.get("instance"), loc.get("self")
    if instance is None or descriptor is None:
        return None
    context = {
        "op": "deferred",
        "model": _label(type(instance)),
        "field": descriptor.field.name,
        "instance": _ident(instance),
    }
    return _with_origin(context, instance)


#: FK descriptor -> (owner class, model label, field name, target label, relation).
_fk_shapes: dict[Any, tuple[type, str | None, str, str | None, str]] = {}


def _fk(loc: Locals, sig: Signature, frame: FrameType) -> Context:
    instance, descriptor = loc.get("instance"), loc.get("self")
    if instance is None or descriptor is None:
        return None
    model = type(instance)
    try:
        shape = _fk_shapes.get(descriptor)
    except TypeError:  # an unhashable descriptor: nothing cached
        shape = None
    if shape is None or shape[0] is not model:
        field = descriptor.field
        target = _label(field.related_model)
        shape = (
            model,
            _label(model),
            field.name,
            target,
            "o2o" if field.one_to_one else "fk",
        )
        if target is not None:  # the relation is resolved: it will not change any more
            try:
                _fk_shapes[descriptor] = shape
            except TypeError:
                pass
    context = {
        "op": "fk",
        "model": shape[1],
        "field": shape[2],
        "target": shape[3],
        "relation": shape[4],
        "instance": _ident(instance),
    }
    return _with_origin(context, instance)


def _reverse_o2o(loc: Locals, sig: Signature, frame: FrameType) -> Context:
    instance, descriptor = loc.get("instance"), loc.get("self")
    if instance is None or descriptor is None:
        return None
    related = descriptor.related
    context = {
        "op": "reverse_o2o",
        "model": _label(type(instance)),
        "field": related.get_accessor_name(),
        "target": _label(related.related_model),
        "instance": _ident(instance),
    }
    return _with_origin(context, instance)


def _related_manager(loc: Locals, sig: Signature, frame: FrameType) -> Context:
    manager = loc.get("self")
    instance = getattr(manager, "instance", None)
    if instance is None:
        return None  # a plain model manager: the QuerySet frame below says what it was
    relation = _manager_relation(manager)
    if relation is None:
        return None
    accessor, cache_name, kind = relation
    context = {
        "op": "related_manager",
        "method": loc.get("name") or sig.method,
        "model": _label(type(instance)),
        "field": accessor,
        "target": _label(manager.model),
        "kind": kind,
        "prefetched": _prefetched(instance, cache_name),
        "instance": _ident(instance),
    }
    # How the target filters by its owner: Book.objects.filter(author=...) for author.books,
    # Tag.objects.filter(books=...) for book.tags (an Exists(... OuterRef("pk")) fix needs it).
    remote = getattr(manager, "query_field_name", None) if kind == "m2m" else None
    if kind == "reverse_fk":
        remote = getattr(getattr(manager, "field", None), "name", None)
    if remote is not None:
        context["remote"] = remote
    return _with_origin(context, instance)


def _prefetch(loc: Locals, sig: Signature, frame: FrameType) -> Context:
    instances = loc.get("instances") or ()
    lookup, level = loc.get("lookup"), loc.get("level") or 0
    path = field = None
    if lookup is not None:
        path = "__".join(lookup.prefetch_to.split("__")[: level + 1])
        through = lookup.prefetch_through.split("__")
        field = through[level] if level < len(through) else None
    context = {
        "op": "prefetch",
        "model": _label(type(instances[0])) if instances else None,
        "lookup": path,
        "field": field,
        "count": len(instances),
    }
    site = _prefetch_site(frame)
    if site is not None:
        context["site"] = site
    return context


def _prefetch_site(frame: FrameType) -> dict[str, Any] | None:
    """The creation site of the root queryset whose ``_fetch_all``/``iterator()`` called
    ``prefetch_related_objects`` (the caller of ``frame``, ``prefetch_one_level``)."""
    caller = frame.f_back
    caller = caller.f_back if caller is not None else None
    if caller is None or caller.f_code not in PREFETCH_CALLERS:
        return None  # prefetch_related_objects() called directly: no root queryset
    return site_of(caller.f_locals.get("self"))


def _prefetch_queryset(loc: Locals, sig: Signature, frame: FrameType) -> Context:
    instances = loc.get("instances") or ()
    owner = loc.get("self")
    field = None
    if hasattr(owner, "field") and not hasattr(owner, "instance"):
        field = owner.field.name  # forward descriptor
    elif hasattr(owner, "related"):
        field = owner.related.get_accessor_name()
    elif owner is not None:
        relation = _manager_relation(owner)
        field = relation[0] if relation else None
    return {
        "op": "prefetch",
        "model": _label(type(instances[0])) if instances else None,
        "lookup": None,
        "field": field,
        "count": len(instances),
    }


def _save(loc: Locals, sig: Signature, frame: FrameType) -> Context:
    obj = loc.get("self")
    if obj is None:
        return None
    update_fields = loc.get("update_fields")
    context = {
        "op": "save",
        "model": _label(type(obj)),
        "update_fields": sorted(update_fields) if update_fields is not None else None,
        "instance": _ident(obj),
    }
    if update_fields is None and origin_of(obj) is not None:
        _changes(obj, context)
    return context


def _changes(obj: Any, context: dict[str, Any]) -> None:
    """``changed``: fields whose value differs from the row the instance was loaded with;
    ``deltas``: new - old of the numeric ones (not of sensitive columns). A full-row save of a
    loaded instance is where ``save(update_fields=[...])`` or ``F()`` is the fix."""
    loaded = obj.__dict__.get(LOADED)
    fields = type(obj)._meta.concrete_fields
    if type(loaded) is not tuple or len(loaded) != len(fields):
        return
    state = obj.__dict__
    changed = []
    deltas: dict[str, int | float] = {}
    for f, old in zip(fields, loaded, strict=True):
        new = state.get(f.attname, DEFERRED)
        if old is DEFERRED or new is DEFERRED or new is old:
            continue
        try:
            same = bool(new == old)
        except Exception:  # exotic types: say changed rather than guess
            same = False
        if same:
            continue
        changed.append(f.name)
        if type(new) in (int, float) and type(old) in (int, float) and not _is_sensitive(f.column):
            deltas[f.name] = new - old
    context["changed"] = changed
    if deltas:
        context["deltas"] = deltas


def _insert(loc: Locals, sig: Signature, frame: FrameType) -> Context:
    obj = loc.get("self")
    if obj is None:
        return None
    return {"op": "insert", "model": _label(type(obj)), "instance": _ident(obj)}


def _delete(loc: Locals, sig: Signature, frame: FrameType) -> Context:
    obj = loc.get("self")
    if obj is None:
        return None
    if sig.method == "bulk":
        return {"op": "delete", "model": _label(obj.model), "bulk": True}
    return {"op": "delete", "model": _label(type(obj)), "instance": _ident(obj)}


def _bulk_create(loc: Locals, sig: Signature, frame: FrameType) -> Context:
    qs, objs = loc.get("self"), loc.get("objs")
    if qs is None:
        return None
    return {
        "op": "bulk_create",
        "model": _label(qs.model),
        "count": len(objs) if hasattr(objs, "__len__") else None,
    }


def _bulk_update(loc: Locals, sig: Signature, frame: FrameType) -> Context:
    qs, objs, fields = loc.get("self"), loc.get("objs"), loc.get("fields") or ()
    if qs is None:
        return None
    return {
        "op": "bulk_update",
        "model": _label(qs.model),
        "fields": [getattr(f, "name", f) for f in fields] if hasattr(fields, "__len__") else None,
        "count": len(objs) if hasattr(objs, "__len__") else None,
    }


def _update(loc: Locals, sig: Signature, frame: FrameType) -> Context:
    qs = loc.get("self")
    if qs is None:
        return None
    return {"op": "update", "model": _label(qs.model), "fields": sorted(loc.get("kwargs") or ())}


#: id(reverse relation) -> (relation, accessor, prefetch cache name).
_reverse_names: dict[int, tuple[Any, str, str]] = {}


def _queryset_relation(qs: Any) -> tuple[Any, str, str, str] | None:
    """(owner, accessor, prefetch cache name, kind) of a related manager's queryset."""
    owner = qs._hints.get("instance")
    if owner is None:
        return None
    known = qs._known_related_objects
    if known:
        rel = next(iter(known)).remote_field
        names = _reverse_names.get(id(rel))
        if names is None or names[0] is not rel:
            names = _reverse_names[id(rel)] = (rel, rel.get_accessor_name(), _cache_name(rel))
        return owner, names[1], names[2], "reverse_fk"
    found = _m2m_relation(type(owner), qs.model, qs)
    if found is None:
        return None  # e.g. the queryset of a forward FK descriptor: not a related manager's
    return owner, found[0], found[1], "m2m"


def _related_context(
    qs: Any, relation: tuple[Any, str, str, str], op: str, method: str | None
) -> dict[str, Any]:
    """The ``related_manager`` (with ``method``) or ``related_fetch`` context of a queryset."""
    owner, accessor, cache_name, kind = relation
    query = qs.query
    owner_model = type(owner)
    model = _labels.get(owner_model) or _label(owner_model)
    target_model = qs.model
    target = _labels.get(target_model) or _label(target_model)
    cache = getattr(owner, "_prefetched_objects_cache", None)
    prefetched = bool(cache) and cache_name in cache
    filtered = len(query.where.children) > 1
    limited = bool(query.low_mark) or query.high_mark is not None
    context: dict[str, Any] = {"op": op}
    if method is not None:
        context["method"] = method
    context.update(
        model=model,
        field=accessor,
        target=target,
        kind=kind,
        prefetched=prefetched,
        filtered=filtered,
        limited=limited,
        instance=_ident(owner),
    )
    return _with_origin(context, owner)


def _queryset(loc: Locals, sig: Signature, frame: FrameType) -> Context:
    qs = loc.get("self")
    if qs is None:
        return None
    if qs._hints:
        relation = _queryset_relation(qs)
        if relation is not None:
            return _related_context(qs, relation, "related_manager", sig.method)
    return {"op": "queryset", "method": sig.method, "model": _label(qs.model)}


def _related_fetch(loc: Locals, sig: Signature, frame: FrameType) -> Context:
    # _queryset_relation + _related_context inlined: this one runs for every lazy related
    # list a template loops over (the N+1 on a many-to-many or reverse FK).
    qs = loc.get("self")
    if qs is None:
        return None
    hints = qs._hints
    owner = hints.get("instance") if hints else None
    if owner is None:
        return None
    owner_model = type(owner)
    target_model = qs.model
    known = qs._known_related_objects
    if known:
        rel = next(iter(known)).remote_field
        names = _reverse_names.get(id(rel))
        if names is None or names[0] is not rel:
            names = _reverse_names[id(rel)] = (rel, rel.get_accessor_name(), _cache_name(rel))
        accessor, cache_name, kind = names[1], names[2], "reverse_fk"
    else:
        by_target = _m2m_candidates.get(owner_model)
        found = by_target.get(target_model) if by_target is not None else None
        if found is not None and len(found) == 1:
            accessor, cache_name = found[0][0], found[0][1]
        else:
            pair = _m2m_relation(owner_model, target_model, qs)
            if pair is None:
                return None  # e.g. the queryset of a forward FK descriptor
            accessor, cache_name = pair
        kind = "m2m"
    query = qs.query
    cache = getattr(owner, "_prefetched_objects_cache", None)
    context = {
        "op": "related_fetch",
        "model": _labels.get(owner_model) or _label(owner_model),
        "field": accessor,
        "target": _labels.get(target_model) or _label(target_model),
        "kind": kind,
        "prefetched": bool(cache) and cache_name in cache,
        "filtered": len(query.where.children) > 1,
        "limited": bool(query.low_mark) or query.high_mark is not None,
        "instance": _ident(owner),
    }
    origin = origin_of(owner)
    if origin is not None:
        context["origin"] = origin
    return context


def _fetch(loc: Locals, sig: Signature, frame: FrameType) -> Context:
    # The lowest priority: a ModelIterable whose SELECT no other reader claimed, i.e. a root
    # queryset being evaluated (iteration, list(), len(), a template's {% for %}, qs[0]).
    qs = getattr(loc.get("self"), "queryset", None)
    if qs is None:
        return None
    hints = qs._hints
    if hints and hints.get("instance") is not None:
        return None  # a related manager's queryset the related readers could not place
    model = qs.model
    query = qs.query
    context: dict[str, Any] = {
        "op": "fetch",
        "model": _labels.get(model) or _label(model),
        "site": query.__dict__.get(SITE),
    }
    related = query.select_related
    if related:
        paths = _select_related_paths(related, loc.get("compiler"))
        if paths:
            context["select_related"] = paths
    return context


def _select_related_paths(related: Any, compiler: Any) -> list[str]:
    """``select_related`` as lookup paths (``author``, ``author__profile``), in the order given.

    A bare ``select_related()`` (``True``) follows every non-null foreign key: the paths are
    then the relations the compiler actually joined.
    """
    paths: list[str] = []
    if isinstance(related, dict):
        _tree_paths(related, "", paths)
    else:
        info = getattr(compiler, "klass_info", None)
        if info:
            _joined_paths(info, "", paths)
    return paths


def _tree_paths(tree: dict[str, Any], prefix: str, paths: list[str]) -> None:
    for name, sub in tree.items():
        paths.append(prefix + name)
        if sub:
            _tree_paths(sub, f"{prefix}{name}__", paths)


def _joined_paths(klass_info: dict[str, Any], prefix: str, paths: list[str]) -> None:
    for sub in klass_info.get("related_klass_infos") or ():
        field = sub["field"]
        name = field.related_query_name() if sub.get("reverse") else field.name
        paths.append(prefix + name)
        _joined_paths(sub, f"{prefix}{name}__", paths)


READERS: dict[str, Callable[[Locals, Signature, FrameType], Context]] = {
    "deferred": _deferred,
    "fk": _fk,
    "reverse_o2o": _reverse_o2o,
    "related_manager": _related_manager,
    "prefetch": _prefetch,
    "prefetch_queryset": _prefetch_queryset,
    "save": _save,
    "insert": _insert,
    "delete": _delete,
    "bulk_create": _bulk_create,
    "bulk_update": _bulk_update,
    "update": _update,
    "queryset": _queryset,
    "related_fetch": _related_fetch,
    "fetch": _fetch,
}


def _unwrap_attr(obj: Any) -> Any:
    if isinstance(obj, (staticmethod, classmethod)):
        return obj.__func__
    if isinstance(obj, property):
        return obj.fget
    return getattr(obj, "__func__", obj)


def resolve_code(module: str, qualname: str) -> CodeType | None:
    """The code object of ``module.qualname``, following ``<locals>`` into nested code."""
    try:
        obj: Any = importlib.import_module(module)
    except ImportError:
        return None
    code: CodeType | None = None
    for part in qualname.split("."):
        if part == "<locals>":
            if code is None:
                code = getattr(_unwrap_attr(obj), "__code__", None)
                if code is None:
                    return None
            continue
        if code is not None:
            code = next(
                (c for c in code.co_consts if isinstance(c, CodeType) and c.co_name == part),
                None,
            )
            if code is None:
                return None
            continue
        namespace = getattr(obj, "__dict__", {})
        obj = namespace[part] if part in namespace else getattr(obj, part, None)
        if obj is None:
            return None
        obj = _unwrap_attr(obj)
    if code is None:
        code = getattr(obj, "__code__", None)
    if code is None or code.co_name != qualname.rsplit(".", 1)[-1]:
        return None
    return code


def build_table(version: tuple[int, ...] | None = None) -> dict[int, Signature]:
    """Resolve :data:`SIGNATURES` for a Django version: ``{id(code): Signature}``."""
    version = tuple(version or django.VERSION[:2])
    table: dict[int, Signature] = {}
    del _keep_alive[:]
    for row in SIGNATURES:
        if version < row.since or (row.until is not None and version >= row.until):
            continue
        code = resolve_code(row.module, row.qualname)
        if code is not None:
            table[id(code)] = Signature(row, READERS[row.reader])
            _keep_alive.append(code)
    return table


_keep_alive: list[CodeType] = []


def _priority(hit: tuple[Signature, FrameType]) -> int:
    return hit[0].priority


def read_context(
    hits: list[tuple[Signature, FrameType]], ordered: bool = False
) -> dict[str, Any] | None:
    """Pick the ORM context from matched frames (innermost first), by priority.

    ``ordered``: the caller already sorted them (stacks.py does for known stack shapes).
    """
    if len(hits) > 1 and not ordered:
        hits.sort(key=_priority)  # stable: ties keep the innermost first (the list is ours)
    for sig, frame in hits:
        try:
            result = sig.read(frame.f_locals, sig, frame)
        except Exception:
            note_error("orm")
            continue
        if result is not None:
            return result
    return None


_installed = False


def install(config: Any = None) -> None:
    """Register the signature table with the stack walker (idempotent)."""
    global _installed, _is_sensitive
    if config is not None:
        _is_sensitive = make_sensitive_check(config.sensitive)
        _sensitive_pk.clear()
    _labels.clear()
    _fk_shapes.clear()
    _reverse_names.clear()
    _m2m_candidates.clear()
    if _installed:
        return
    stacks.register_orm(build_table(), read_context)
    _installed = True


def uninstall() -> None:
    global _installed
    stacks.register_orm({}, None)
    _installed = False
