"""Fix suggestions: captured requests in, ranked "do this edit there" advice out.

Pure Python over a :class:`~djangoscope.app.core.store.SessionStore` (no Django, no Qt), so the
headless report and the desktop window share it. Every detector reads what the probe recorded
per query: the ORM context from frame locals (``orm``: op, model, field, owner instance and,
when the probe could tag it, ``origin``: the query that loaded the owner), the deduplicated
call stack and the template line. ``../shared/design/ANALYSIS.md`` is the catalogue; the
``kind`` names come from there.

How a suggestion is made, in order:

1. **Per request**, queries are grouped by what fired them: the same ORM operation on the same
   relation (model, field) from the same full stack and template line (Prosopite's "same
   stack" rule), and, when the probe tagged it, owners loaded by the same root query. A group
   counts only with at least two queries over at least two different owner instances: one
   lazy access from a list, or the same row read twice, is not an N+1 (the second is a
   duplicate, reported as such).
2. **The fix names the tool the relation needs**: forward FK/O2O and reverse O2O ->
   ``select_related``; reverse FK and many-to-many -> ``prefetch_related``; filtered or sliced
   related access (which a plain prefetch cannot serve) -> ``Prefetch(..., to_attr=...)``; an
   owner that itself came from a prefetch -> the nested path ``"books__publisher"``; counts and
   existence checks per row -> ``annotate(...)``; writes in a loop -> bulk operations.
3. **Sites**: the fire site is where the queries ran (the template file and line when a
   template ran them, else the innermost app frame); the fix site is where the root queryset
   was built (the probe's ``site`` of the loading query), else where it was evaluated, else
   the innermost app frame of the queries (for a template, the view's ``render()`` call).
4. **Across requests** of one endpoint (method + route) equal findings merge into one
   suggestion with every request id; ids are a hash of what the suggestion says, so the same
   session gives the same ids and order. Ranked by time saved, then queries saved.
5. **Measure twice, cut once**: when later requests of the same endpoint no longer show a
   suggestion (the fix was applied and the dev server reloaded), it is marked ``resolved``
   with the measured query count and time before and after.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import operator
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .store import SessionStore

__all__ = ["Site", "Suggestion", "analyze", "analyze_requests"]

#: Groups smaller than this are never reported (one access from a list is fine).
MIN_REPEATS = 2
#: Identical (SQL, params) queries on the same endpoint in at least this many requests make a
#: cache candidate ...
CACHE_MIN_REQUESTS = 3
#: ... when they aggregate, or cost at least this many milliseconds per request.
CACHE_MIN_MS = 1.0

#: Aggregates and groupings: work worth caching even when the demo database makes it fast.
_AGGREGATE = re.compile(r"\b(GROUP BY|COUNT\(|SUM\(|AVG\(|MIN\(|MAX\()", re.IGNORECASE)
#: Writes on a GET that count as slow on their own; below it, only 2+ writes in autocommit do.
SLOW_WRITE_MS = 20.0
#: Lookups (get/first/exists/count) from one place that make a ``get_in_loop``.
LOOKUP_MIN = 3
#: Single-key cache reads from one place, in one request, that make a ``cache_in_loop``.
CACHE_LOOP_MIN = 3
#: Writes Django itself does on reads (sessions, last login) are not the page's doing.
_IGNORED_WRITE_TABLES = ('"django_session"', '"django_admin_log"', "`django_session`")


@dataclass(frozen=True)
class Site:
    """A place in the user's code or templates: ``file`` (path or template name) and ``line``."""

    file: str
    line: int | None
    func: str | None = None
    template: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line}

    def short(self) -> str:
        name = self.file.replace("\\", "/").rsplit("/", 1)[-1] if not self.template else self.file
        return f"{name}:{self.line}" if self.line is not None else name


@dataclass
class Suggestion:
    """One piece of advice; ``to_dict`` is the ``report --json`` contract (DESIGN.md)."""

    id: str
    kind: str
    severity: str
    title: str
    detail: str
    fix: str
    model: str | None
    field: str | None
    fire_site: Site | None
    fix_site: Site | None
    queries_saved: int
    ms_saved: float
    request_ids: list[int]
    endpoint: str
    occurrences: int = 1
    status: str = "open"
    before: dict[str, float] | None = None
    after: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "severity": self.severity,
            "title": self.title,
            "detail": self.detail,
            "fix": self.fix,
            "model": self.model,
            "field": self.field,
            "fire_site": self.fire_site.to_dict() if self.fire_site else None,
            "fix_site": self.fix_site.to_dict() if self.fix_site else None,
            "queries_saved": self.queries_saved,
            "ms_saved": round(self.ms_saved, 3),
            "request_ids": self.request_ids,
            "endpoint": self.endpoint,
            "occurrences": self.occurrences,
            "status": self.status,
            "before": self.before,
            "after": self.after,
        }


# -- inputs ------------------------------------------------------------------------------------


@dataclass
class _Query:
    idx: int
    sql: str
    params: Any
    ms: float
    start_ns: int | None
    operation: str
    fingerprint: str
    stack_id: int | None
    template: Site | None
    orm: dict[str, Any]
    atomic: bool
    duplicate_of: int | None


@dataclass
class _Cache:
    idx: int
    op: str
    keys: list[str]
    hit: bool | None
    start_ns: int
    end_ns: int
    stack_id: int | None
    template: Site | None


@dataclass
class _Request:
    id: int
    method: str
    view: str
    endpoint: str
    status: int | None
    duration_ms: float
    query_count: int
    queries: list[_Query]
    cache: list[_Cache] = field(default_factory=list)


@dataclass
class _Finding:
    """One problem in one request, before merging across requests."""

    kind: str
    model: str | None
    field: str | None
    fix: str
    title: str
    detail: str
    fire_site: Site | None
    fix_site: Site | None
    queries_saved: int
    ms_saved: float
    queries: list[int] = field(default_factory=list)

    def key(self, endpoint: str) -> tuple[Any, ...]:
        fire = (self.fire_site.file, self.fire_site.line) if self.fire_site else None
        return (endpoint, self.kind, self.model, self.field, fire, self.fix)


class _Stacks:
    """Stack rows by id, read once each."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self._frames: dict[int, list[dict[str, Any]]] = {}

    def frames(self, stack_id: int | None) -> list[dict[str, Any]]:
        if stack_id is None:
            return []
        known = self._frames.get(stack_id)
        if known is None:
            row = self.store.stack(stack_id)
            frames = row.get("frames") if row else None
            known = self._frames[stack_id] = frames if isinstance(frames, list) else []
        return known

    def app_site(self, stack_id: int | None, outermost: bool = False) -> Site | None:
        frames = [f for f in self.frames(stack_id) if isinstance(f, dict) and f.get("app")]
        if not frames:
            return None
        frame = frames[0] if outermost else frames[-1]
        return Site(str(frame.get("file") or "?"), frame.get("line"), frame.get("func"))


def _endpoint(row: dict[str, Any]) -> str:
    return f"{row.get('method') or '?'} {row.get('route') or row.get('path') or '?'}"


def _template_site(row: dict[str, Any]) -> Site | None:
    """The template line a query or cache call ran from, if a template ran it."""
    if not row.get("template_name"):
        return None
    return Site(row["template_name"], row.get("template_line"), template=True)


def _queries_by_request(store: SessionStore) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """Every query of the session in one streamed pass, grouped by request (id order)."""
    for request_id, rows in itertools.groupby(
        store.iter_all_queries(), key=operator.itemgetter("request_id")
    ):
        yield request_id, list(rows)


def _load(store: SessionStore) -> Iterable[_Request]:
    grouped = _queries_by_request(store)
    pending = next(grouped, None)
    for row in store.iter_requests():
        while pending is not None and pending[0] < row["id"]:
            pending = next(grouped, None)  # queries of a request pruned meanwhile
        rows: list[dict[str, Any]] = []
        if pending is not None and pending[0] == row["id"]:
            rows = pending[1]
            pending = next(grouped, None)
        queries = [
            _Query(
                idx=q["idx"],
                sql=q.get("sql") or "",
                params=q.get("params"),
                ms=(q.get("duration_ns") or 0) / 1e6,
                start_ns=q.get("start_ns"),
                operation=(q.get("operation") or "").upper(),
                fingerprint=q.get("fingerprint") or "",
                stack_id=q.get("stack_id"),
                template=_template_site(q),
                orm=q["orm"] if isinstance(q.get("orm"), dict) else {},
                atomic=bool(q.get("atomic")),
                duplicate_of=q.get("duplicate_of"),
            )
            for q in rows
        ]
        cache = []
        for c in store.cache_events(row["id"]):
            keys = c.get("keys") if isinstance(c.get("keys"), list) else []
            start = c.get("start_ns") or 0
            cache.append(
                _Cache(
                    idx=c["idx"],
                    op=c.get("op") or "",
                    keys=[str(k) for k in keys],
                    hit=None if c.get("hit") is None else bool(c["hit"]),
                    start_ns=start,
                    end_ns=start + (c.get("duration_ns") or 0),
                    stack_id=c.get("stack_id"),
                    template=_template_site(c),
                )
            )
        yield _Request(
            id=row["id"],
            method=(row.get("method") or "").upper(),
            view=row.get("view") or "",
            endpoint=_endpoint(row),
            status=row.get("status"),
            duration_ms=row.get("duration_ms") or 0.0,
            query_count=row.get("query_count") or len(queries),
            queries=queries,
            cache=cache,
        )


# -- per-request detection ---------------------------------------------------------------------

_LAZY_SELECT = {"fk", "reverse_o2o"}
_CHANGELIST = re.compile(r"^(?:[\w-]+:)?\w+_changelist$")
#: QuerySet methods that, run once per item of a loop, want one query for all the items.
_LOOKUP_METHODS = ("get", "first", "last", "exists", "count")
#: ``WHERE "table"."column" = %s``: the one equality filter a lookup loop varies.
_WHERE_EQ = re.compile(r'\bWHERE\s+(?:["`\[]?\w+["`\]]?\.)?["`\[]?(\w+)["`\]]?\s*=\s*%s', re.I)
_WRITE_KINDS = {"insert": "insert_in_loop", "save": "update_in_loop", "delete": "delete_in_loop"}
_SET_COLUMNS = re.compile(r"\bSET\s+(.*?)\s+WHERE\b", re.IGNORECASE | re.DOTALL)
_COLUMN = re.compile(r'["`\[]?(\w+)["`\]]?\s*=\s*')


def _model_name(label: str | None) -> str:
    return (label or "?").rsplit(".", 1)[-1]


def _table_of(sql: str) -> str:
    match = re.search(r'\bFROM\s+["`\[]?(\w+)', sql, re.IGNORECASE)
    return match.group(1) if match else "?"


class _Detector:
    """Finds the problems of one request."""

    def __init__(self, request: _Request, stacks: _Stacks) -> None:
        self.request = request
        self.stacks = stacks
        self.by_idx = {q.idx: q for q in request.queries}
        #: An admin changelist (view name ``admin:<app>_<model>_changelist``)?
        self.changelist = bool(_CHANGELIST.match(request.view))
        #: Every relation the changelist loads lazily, joinable: its list_select_related.
        self.admin_selects: list[str] = []

    @functools.cached_property
    def view_site(self) -> Site | None:
        """The outermost app frame of the request's queries: the last resort for a fix site."""
        for q in self.request.queries:
            site = self.stacks.app_site(q.stack_id, outermost=True)
            if site is not None:
                return site
        return None

    def fire_site(self, q: _Query) -> Site | None:
        return q.template or self.stacks.app_site(q.stack_id)

    def origin(self, q: _Query) -> _Query | None:
        """The query that loaded the owner instance of ``q`` (the probe's ``origin``)."""
        return self.by_idx.get(q.orm["origin"]) if "origin" in q.orm else None

    def fix_site(self, q: _Query) -> Site | None:
        """Where the owners' root queryset was built, else evaluated, else the view."""
        origin = self.origin(q)
        if origin is not None:
            site = origin.orm.get("site")
            if isinstance(site, dict) and site.get("file"):
                return Site(str(site["file"]), site.get("line"), site.get("func"))
            found = self.stacks.app_site(origin.stack_id)
            if found is not None:
                return found
        # Unknown origin: the innermost app frame (a template's view: its render() call).
        return self.stacks.app_site(q.stack_id) or self.view_site

    def run(self) -> list[_Finding]:
        groups: dict[tuple[Any, ...], list[_Query]] = defaultdict(list)
        for q in self.request.queries:
            op = q.orm.get("op")
            if op in _LAZY_SELECT or op in ("related_fetch", "related_manager", "deferred"):
                method = q.orm.get("method") if op == "related_manager" else None
                key = (op, method, q.orm.get("model"), q.orm.get("field"))
            elif op == "queryset" and q.orm.get("method") in _LOOKUP_METHODS:
                key = ("get", q.orm.get("method"), q.orm.get("model"), q.fingerprint)
            elif op in _WRITE_KINDS and not q.orm.get("bulk") and q.operation != "SELECT":
                # Not by fingerprint: a None value makes "SET col = NULL", another statement.
                key = (op, None, q.orm.get("model"), q.operation)
            else:
                continue
            origin = q.orm.get("origin")
            groups[(*key, q.stack_id, q.template, origin)].append(q)
        findings = []
        covered: set[int] = set()
        if self.changelist:
            self.admin_selects = sorted(
                {
                    str(key[3])
                    for key, qs in groups.items()
                    if key[0] in _LAZY_SELECT and len(qs) > 1
                }
            )
        for (op, method, model, fieldname, *_), queries in groups.items():
            instances = {q.orm.get("instance") for q in queries}
            if len(queries) < MIN_REPEATS:
                continue
            if op not in _WRITE_KINDS and op != "get" and len(instances - {None}) < MIN_REPEATS:
                continue  # the same row read again: a duplicate, not an N+1
            if op == "get" and len(queries) < LOOKUP_MIN:
                continue  # two lookups on one line are not yet a loop
            finding = self._finding(op, method, model, fieldname, queries)
            if finding is not None:
                finding.queries = [q.idx for q in queries]
                covered.update(finding.queries)
                findings.append(finding)
        findings += self._full_row_saves(covered)
        findings += self._duplicates(covered)
        findings += self._writes(covered)
        findings += self._cache_loops()
        return findings

    # -- one finding per group ------------------------------------------------------------------
    def _finding(
        self, op: str, method: str | None, model: str | None, fieldname: Any, qs: list[_Query]
    ) -> _Finding | None:
        n = len(qs)
        first = qs[0]
        total = sum(q.ms for q in qs)
        fire = self.fire_site(first)
        fix_at = self.fix_site(first)
        owner = _model_name(model)
        where = f" at {fix_at.short()}" if fix_at else ""
        fired = fire.short() if fire else "?"
        shown_sql = _shorten(first.sql)
        before = self.request.query_count
        if op in _LAZY_SELECT or op == "related_fetch":
            path = self._path(first, str(fieldname))
            nested = "__" in path
            eager = "prefetch_related" if (op == "related_fetch" or nested) else "select_related"
            if op == "related_fetch" and (first.orm.get("filtered") or first.orm.get("limited")):
                return self._prefetch_to_attr(first, qs, owner, str(fieldname), fire, fix_at)
            saved = n if eager == "select_related" else n - 1
            ms = total if eager == "select_related" else total - max(q.ms for q in qs)
            fix = f'.{eager}("{path}")'
            if self.changelist:
                return self._admin(eager, path, model, str(fieldname), qs, saved, ms)
            return _Finding(
                kind="n_plus_one",
                model=model,
                field=str(fieldname),
                fix=fix,
                title=f"N+1: {owner}.{fieldname} loaded one row at a time ({n} queries)",
                detail=(
                    f"{fired} runs {n}x `{shown_sql}`, one per {owner}. "
                    f"Add `{fix}` to the queryset{where}: {before} -> {before - saved} queries."
                ),
                fire_site=fire,
                fix_site=fix_at,
                queries_saved=saved,
                ms_saved=ms,
            )
        if op == "related_manager":
            if method in ("count", "exists"):
                remote = first.orm.get("remote")
                target = _model_name(first.orm.get("target"))
                if method == "exists" and isinstance(remote, str) and remote:
                    alias = f"has_{fieldname}"
                    fix = (
                        f".annotate({alias}=Exists({target}.objects.filter("
                        f'{remote}=OuterRef("pk"))))'
                    )
                    use = f"{owner.lower()}.{alias}"
                else:
                    alias = f"num_{fieldname}" if method == "count" else f"has_{fieldname}"
                    fix = f'.annotate({alias}=Count("{fieldname}"))'
                    use = f"{owner.lower()}.{alias}" + (" > 0" if method == "exists" else "")
                return _Finding(
                    kind=f"related_{method}_in_loop",
                    model=model,
                    field=str(fieldname),
                    fix=fix,
                    title=f"{owner}.{fieldname}.{method}() runs once per {owner} ({n} queries)",
                    detail=(
                        f"{fired} runs {n}x `{shown_sql}`. Count in the {owner} query instead: "
                        f"add `{fix}`{where} and read `{use}`: {before} -> {before - n} queries "
                        f'(if the rows are shown too, `.prefetch_related("{fieldname}")` '
                        f"makes `.{method}()` free)."
                    ),
                    fire_site=fire,
                    fix_site=fix_at,
                    queries_saved=n,
                    ms_saved=total,
                )
            return self._prefetch_to_attr(first, qs, owner, str(fieldname), fire, fix_at)
        if op == "deferred":
            fix = f'.only(..., "{fieldname}")'
            return _Finding(
                kind="deferred_field_in_loop",
                model=model,
                field=str(fieldname),
                fix=fix,
                title=f"Deferred field {owner}.{fieldname} loaded per row ({n} queries)",
                detail=(
                    f"{fired} reads `{fieldname}`, which `.only()`/`.defer()` left out, so each "
                    f'{owner} runs `{shown_sql}`. Add "{fieldname}" to `.only(...)` (or drop '
                    f"it from `.defer(...)`){where}: {before} -> {before - n} queries."
                ),
                fire_site=fire,
                fix_site=fix_at,
                queries_saved=n,
                ms_saved=total,
            )
        if op == "get":
            return self._lookup_loop(str(method), model, qs, fire)
        return self._write_loop(op, model, qs, fire)

    def _lookup_loop(
        self, method: str, model: str | None, qs: list[_Query], fire: Site | None
    ) -> _Finding:
        """get()/first()/exists()/count() per item: one ``__in`` query for all the items."""
        n = len(qs)
        first = qs[0]
        owner = _model_name(model)
        match = _WHERE_EQ.search(first.sql)
        column = match.group(1) if match else None
        # The column of a foreign key is "<name>_id"; the lookup is on the field name.
        lookup = (column[:-3] if column and column.endswith("_id") else column) or "pk"
        values = "values"
        if method == "exists":
            fix = (
                f"found = set({owner}.objects.filter({lookup}__in={values})"
                f'.values_list("{lookup}", flat=True))'
            )
            use = "then test `value in found`"
        elif method == "count":
            fix = (
                f"counts = dict({owner}.objects.filter({lookup}__in={values})"
                f'.values_list("{lookup}").annotate(n=Count("pk")))'
            )
            use = "then read `counts.get(value, 0)`"
        elif lookup == "pk" or lookup == "id":
            fix = f"{owner.lower()}s = {owner}.objects.in_bulk({values})"
            use = f"then read `{owner.lower()}s[value]`"
        else:
            fix = f'{owner.lower()}s = {owner}.objects.in_bulk({values}, field_name="{lookup}")'
            use = f"then read `{owner.lower()}s[value]` (the field must be unique)"
        before = self.request.query_count
        return _Finding(
            kind="get_in_loop",
            model=model,
            field=lookup,
            fix=fix,
            title=f"{owner}.objects...{method}() once per item of a loop ({n} queries)",
            detail=(
                f"{fire.short() if fire else '?'} runs {n}x `{_shorten(first.sql)}`, one "
                f"per value. Ask once for all of them before the loop: `{fix}`, {use}: "
                f"{before} -> {before - n + 1} queries."
            ),
            fire_site=fire,
            fix_site=self.stacks.app_site(first.stack_id),
            queries_saved=n - 1,
            ms_saved=sum(q.ms for q in qs) - max(q.ms for q in qs),
        )

    def _admin(
        self,
        eager: str,
        path: str,
        model: str | None,
        fieldname: str,
        qs: list[_Query],
        saved: int,
        ms: float,
    ) -> _Finding:
        """A changelist N+1: the fix goes on the ModelAdmin, not on a queryset in a view."""
        n = len(qs)
        owner = _model_name(model)
        method = self.stacks.app_site(qs[0].stack_id)  # the list_display callable
        admin_class = (method.func or "").split(".")[0] if method and method.func else ""
        fix_at = _class_site(method, admin_class) if method else None
        named = admin_class or f"the ModelAdmin of {model}"
        if eager == "select_related":
            paths = self.admin_selects or [path]
            listed = ", ".join(f'"{p}"' for p in paths) + ("," if len(paths) == 1 else "")
            fix = f"list_select_related = ({listed})"
            why = (
                "a tuple replaces Django's automatic select_related() (which only follows "
                "foreign keys named in list_display), so it lists every relation the list shows"
            )
        else:
            fix = (
                "def get_queryset(self, request): return super().get_queryset(request)"
                f'.prefetch_related("{path}")'
            )
            why = "the changelist cannot join a many-valued relation, so prefetch it"
        before = self.request.query_count
        return _Finding(
            kind="n_plus_one",
            model=model,
            field=fieldname,
            fix=fix,
            title=f"Admin list N+1: {owner}.{fieldname} loaded per row ({n} queries)",
            detail=(
                f"{method.short() if method else '?'} reads `{fieldname}` for each row of the "
                f"changelist: {n}x `{_shorten(qs[0].sql)}`. Set `{fix}` on {named}; {why}: "
                f"{before} -> {before - saved} queries."
            ),
            fire_site=method,
            fix_site=fix_at,
            queries_saved=saved,
            ms_saved=ms,
        )

    def _path(self, q: _Query, fieldname: str) -> str:
        """The lookup path: nested below the prefetch that loaded the owner, if one did."""
        origin = self.origin(q)
        if origin is not None and origin.orm.get("op") == "prefetch":
            lookup = origin.orm.get("lookup")
            if isinstance(lookup, str) and lookup:
                return f"{lookup}__{fieldname}"
        return fieldname

    def _prefetch_to_attr(
        self,
        first: _Query,
        qs: list[_Query],
        owner: str,
        fieldname: str,
        fire: Site | None,
        fix_at: Site | None,
    ) -> _Finding:
        n = len(qs)
        target = _model_name(first.orm.get("target"))
        attr = f"{fieldname}_list"
        # The filter as written at the fire site (the collector runs beside the dev server and
        # can read it); "filter(...)" when it is in a template or cannot be read.
        chain = _related_chain(fire, fieldname) if fire and not fire.template else None
        chain = chain or ".filter(...)"
        fix = (
            f'.prefetch_related(Prefetch("{fieldname}", '
            f'queryset={target}.objects{chain}, to_attr="{attr}"))'
        )
        bypassed = " (the existing prefetch cannot serve it)" if first.orm.get("prefetched") else ""
        return _Finding(
            kind="n_plus_one",
            model=first.orm.get("model"),
            field=fieldname,
            fix=fix,
            title=f"N+1: filtered {owner}.{fieldname} queried per row ({n} queries)",
            detail=(
                f"{fire.short() if fire else '?'} runs {n}x `{_shorten(first.sql)}`: a filtered, "
                f"ordered or sliced `{fieldname}` per {owner}{bypassed}. Prefetch exactly that "
                f"set once with `{fix}` and read "
                f"`{owner.lower()}.{attr}`: {self.request.query_count} -> "
                f"{self.request.query_count - n + 1} queries."
            ),
            fire_site=fire,
            fix_site=fix_at,
            queries_saved=n - 1,
            ms_saved=sum(q.ms for q in qs) - max(q.ms for q in qs),
        )

    def _write_loop(
        self, op: str, model: str | None, qs: list[_Query], fire: Site | None
    ) -> _Finding:
        n = len(qs)
        owner = _model_name(model)
        first = qs[0]
        autocommit = not any(q.atomic for q in qs)
        if op == "insert":
            fix = f"{owner}.objects.bulk_create(objs, batch_size=500)"
            what = "INSERT"
        elif op == "save":
            what = "UPDATE"
            changed = _changes(qs)
            if changed is not None and changed[1]:
                exprs = ", ".join(
                    f'{f}=F("{f}") {"+" if d >= 0 else "-"} {abs(d)}'
                    for f, d in sorted(changed[1].items())
                )
                fix = f"{owner}.objects.filter(pk__in=ids).update({exprs})"
            else:
                fields = (
                    changed[0]
                    if changed is not None and changed[0]
                    else first.orm.get("update_fields") or _set_columns(first.sql)
                )
                listed = ", ".join(f'"{f}"' for f in fields)
                fix = f"{owner}.objects.bulk_update(objs, [{listed}], batch_size=500)"
        else:
            fix = f"{owner}.objects.filter(pk__in=ids).delete()"
            what = "DELETE"
        wrap = " inside `with transaction.atomic():`" if autocommit else ""
        saved = n - 1
        total = sum(q.ms for q in qs)
        return _Finding(
            kind=_WRITE_KINDS[op],
            model=model,
            field=None,
            fix=fix,
            title=f"{what} per {owner} in a loop ({n} queries)",
            detail=(
                f"{fire.short() if fire else '?'} runs {n}x `{_shorten(first.sql)}`"
                f"{' in autocommit (a transaction each)' if autocommit else ''}. "
                f"Write them in one statement: `{fix}`{wrap}. Note: bulk operations skip "
                f"`save()` overrides and signals."
            ),
            fire_site=fire,
            fix_site=self.stacks.app_site(first.stack_id),
            queries_saved=saved,
            ms_saved=total - max(q.ms for q in qs),
        )

    def _duplicates(self, covered: set[int]) -> list[_Finding]:
        groups: dict[int, list[_Query]] = defaultdict(list)
        for q in self.request.queries:
            if q.duplicate_of is not None and q.idx not in covered:
                groups[q.duplicate_of].append(q)
        findings = []
        for first_idx, copies in groups.items():
            first = self.by_idx.get(first_idx)
            if first is None or first_idx in covered:
                continue
            sites = {self.fire_site(q) for q in copies} - {None}
            fire = self.fire_site(copies[0])
            n = len(copies) + 1
            where = ", ".join(sorted(s.short() for s in sites)[:3])
            fix = "reuse the first result (a local variable or functools.cached_property)"
            findings.append(
                _Finding(
                    kind="duplicate_query",
                    model=first.orm.get("model") or None,
                    field=None,
                    fix=fix,
                    title=f"The same query runs {n}x in one request",
                    detail=(
                        f"`{_shorten(first.sql)}` with the same parameters runs {n} times "
                        f"(again at {where}). Keep the first result: "
                        f"{len(copies)} queries fewer."
                    ),
                    fire_site=fire,
                    fix_site=self.fire_site(first),
                    queries_saved=len(copies),
                    ms_saved=sum(q.ms for q in copies),
                    queries=[first_idx] + [q.idx for q in copies],
                )
            )
        return findings

    def _writes(self, covered: set[int]) -> list[_Finding]:
        """Writes outside any loop finding: in autocommit, or on a GET (the request path)."""
        writes = [
            q
            for q in self.request.queries
            if q.operation in ("INSERT", "UPDATE", "DELETE")
            and q.idx not in covered
            and not any(t in q.sql for t in _IGNORED_WRITE_TABLES)
        ]
        if not writes:
            return []
        sites = []
        for q in writes:
            site = self.fire_site(q)
            if site is not None and site not in sites:
                sites.append(site)
        where = ", ".join(s.short() for s in sites[:4]) or "?"
        total = sum(q.ms for q in writes)
        findings = []
        autocommit = [q for q in writes if not q.atomic]
        if len(autocommit) >= MIN_REPEATS:
            fix = "with transaction.atomic():"
            findings.append(
                _Finding(
                    kind="writes_without_transaction",
                    model=autocommit[0].orm.get("model"),
                    field=None,
                    fix=fix,
                    title=f"{len(autocommit)} writes in autocommit, a transaction each",
                    detail=(
                        f"{where} write {len(autocommit)} times without a transaction: each "
                        f"statement commits on its own, and a failure halfway leaves half the "
                        f"change. Wrap them in `{fix}`: one commit, all or nothing."
                    ),
                    fire_site=sites[0] if sites else None,
                    fix_site=self.stacks.app_site(autocommit[0].stack_id),
                    queries_saved=0,
                    ms_saved=0.0,
                    queries=[q.idx for q in autocommit],
                )
            )
        slow = total >= SLOW_WRITE_MS
        if self.request.method in ("GET", "HEAD") and (len(autocommit) >= MIN_REPEATS or slow):
            fix = "transaction.on_commit(lambda: task.delay(...))"
            findings.append(
                _Finding(
                    kind="slow_write_in_request",
                    model=writes[0].orm.get("model"),
                    field=None,
                    fix=fix,
                    title=(
                        f"A {self.request.method} request writes "
                        f"({_plural(len(writes), 'statement')})"
                    ),
                    detail=(
                        f"{where} write while a {self.request.method} page is being served "
                        f"({total:.1f} ms here, more under load: writes take locks). If the "
                        f"visitor need not wait for it (counters, logs, emails), queue it "
                        f"after the commit with `{fix}` in a task queue."
                    ),
                    fire_site=sites[0] if sites else None,
                    fix_site=self.stacks.app_site(writes[0].stack_id),
                    queries_saved=len(writes),
                    ms_saved=total,
                    queries=[q.idx for q in writes],
                )
            )
        return findings

    def _full_row_saves(self, covered: set[int]) -> list[_Finding]:
        """save() that rewrites every column while only some changed: ``update_fields``."""
        groups: dict[tuple[Any, ...], list[_Query]] = defaultdict(list)
        for q in self.request.queries:
            changed = q.orm.get("changed")
            if (
                q.orm.get("op") == "save"
                and q.operation == "UPDATE"
                and q.idx not in covered
                and isinstance(changed, list)
                and changed
                and len(changed) < len(_set_columns(q.sql))
            ):
                groups[(q.stack_id, q.template, tuple(changed))].append(q)
        findings = []
        for (_, _, changed), qs in groups.items():
            first = qs[0]
            owner = _model_name(first.orm.get("model"))
            listed = ", ".join(f'"{f}"' for f in changed)
            fix = f".save(update_fields=[{listed}])"
            columns = len(_set_columns(first.sql))
            fire = self.fire_site(first)
            findings.append(
                _Finding(
                    kind="full_row_save",
                    model=first.orm.get("model"),
                    field=changed[0] if len(changed) == 1 else None,
                    fix=fix,
                    title=f"{owner}.save() writes {columns} columns, {len(changed)} changed",
                    detail=(
                        f"{fire.short() if fire else '?'} saves a {owner} whose "
                        f"{', '.join(changed)} changed, but the UPDATE rewrites all {columns} "
                        f"columns (and can overwrite a concurrent change to the others). Use "
                        f"`{owner.lower()}{fix}`."
                    ),
                    fire_site=fire,
                    fix_site=fire,
                    queries_saved=0,
                    ms_saved=0.0,
                    queries=[q.idx for q in qs],
                )
            )
        return findings

    def _cache_loops(self) -> list[_Finding]:
        """Single-key gets from one place, one per item: one ``get_many`` instead."""
        groups: dict[tuple[Any, ...], list[_Cache]] = defaultdict(list)
        for c in self.request.cache:
            if c.op in ("get", "aget") and len(c.keys) == 1:
                groups[(c.stack_id, c.template)].append(c)
        findings = []
        for calls in groups.values():
            keys = {c.keys[0] for c in calls}
            if len(calls) < CACHE_LOOP_MIN or len(keys) < CACHE_LOOP_MIN:
                continue
            fire = calls[0].template or self.stacks.app_site(calls[0].stack_id)
            fix = "cache.get_many(keys)"
            total = sum((c.end_ns - c.start_ns) / 1e6 for c in calls)
            findings.append(
                _Finding(
                    kind="cache_in_loop",
                    model=None,
                    field=None,
                    fix=fix,
                    title=f"cache.get() once per item ({len(calls)} round trips)",
                    detail=(
                        f"{fire.short() if fire else '?'} reads {len(calls)} keys one at a "
                        f"time ({_key_pattern(sorted(keys))}). Read them in one round trip "
                        f"with `values = {fix}` (and write with `cache.set_many(...)`)."
                    ),
                    fire_site=fire,
                    fix_site=self.stacks.app_site(calls[0].stack_id),
                    queries_saved=0,
                    ms_saved=total - max((c.end_ns - c.start_ns) / 1e6 for c in calls),
                )
            )
        return findings


#: QuerySet methods a Prefetch queryset can carry over from ``obj.books.<method>(...)``.
_CHAINABLE = ("filter", "exclude", "order_by", "select_related", "only", "defer")


def _related_chain(site: Site, fieldname: str) -> str | None:
    """``.filter(pages__gt=100).order_by("-id")`` as written after ``.<fieldname>`` on the
    fire site's line (parentheses balanced, strings respected); None if not found."""
    line = _source_line(site)
    if line is None:
        return None
    start = line.find(f".{fieldname}.")
    if start < 0:
        return None
    pos = start + len(fieldname) + 1
    parts = []
    while line.startswith(".", pos):
        match = re.match(r"\.(\w+)\(", line[pos:])
        if not match or match.group(1) not in _CHAINABLE:
            break
        end = _closing(line, pos + match.end() - 1)
        if end is None:
            return None
        parts.append(line[pos : end + 1])
        pos = end + 1
    return "".join(parts) or None


def _source_line(site: Site) -> str | None:
    if site.line is None:
        return None
    try:
        with open(site.file, encoding="utf-8") as source:
            for number, text in enumerate(source, 1):
                if number == site.line:
                    return text
    except (OSError, UnicodeDecodeError):
        return None
    return None


def _closing(text: str, open_at: int) -> int | None:
    """Index of the parenthesis closing the one at ``open_at`` (quotes skipped)."""
    depth = 0
    quote = ""
    for i in range(open_at, len(text)):
        char = text[i]
        if quote:
            if char == quote and text[i - 1] != "\\":
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return i
    return None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _class_site(method: Site, name: str) -> Site:
    """The ``class Name`` line of the file that holds ``method`` (the method's line otherwise).

    The collector runs beside the dev server, so the source is usually readable here.
    """
    if name:
        pattern = re.compile(rf"^\s*class\s+{re.escape(name)}\b")
        try:
            with open(method.file, encoding="utf-8") as source:
                for number, line in enumerate(source, 1):
                    if pattern.match(line):
                        return Site(method.file, number, name)
        except (OSError, UnicodeDecodeError):
            pass
    return method


def _common_prefix(keys: list[str]) -> str:
    """The characters every cache key starts with (keys are text, not paths)."""
    if not keys:
        return ""
    low, high = min(keys), max(keys)
    n = 0
    while n < min(len(low), len(high)) and low[n] == high[n]:
        n += 1
    return low[:n]


def _key_pattern(keys: list[str]) -> str:
    prefix = _common_prefix(keys)
    return f"{prefix}*" if prefix else f"{keys[0]}, ..."


def _stable_key(keys: list[str]) -> str:
    prefix = _common_prefix(keys).rstrip(":_-./ 0123456789")
    return prefix or "a-stable-key"


def _changes(qs: list[_Query]) -> tuple[list[str], dict[str, float]] | None:
    """What full-row saves changed (the probe's ``changed``/``deltas``): the fields, and the
    per-field delta when every save added the same number to the same fields (then one
    ``.update(F() + n)`` does it all). None when the probe could not tell for some save."""
    changes = [q.orm.get("changed") for q in qs]
    if not changes or not all(isinstance(c, list) for c in changes):
        return None
    fields = sorted({str(f) for c in changes for f in c})
    deltas = [q.orm.get("deltas") or {} for q in qs]
    uniform = (
        fields
        and all(sorted(c) == fields for c in changes)
        and all(isinstance(d, dict) and sorted(d) == fields for d in deltas)
        and all(d == deltas[0] for d in deltas)
    )
    return fields, (dict(deltas[0]) if uniform else {})


def _set_columns(sql: str) -> list[str]:
    match = _SET_COLUMNS.search(sql)
    if not match:
        return []
    return _COLUMN.findall(match.group(1))


def _shorten(sql: str, width: int = 90) -> str:
    text = " ".join(sql.split())
    text = re.sub(r"^SELECT .*? FROM ", "SELECT ... FROM ", text, flags=re.IGNORECASE)
    return text if len(text) <= width else text[: width - 3] + "..."


# -- across requests ---------------------------------------------------------------------------


def _severity(queries_saved: int, ms_saved: float) -> str:
    if queries_saved >= 50 or ms_saved >= 100:
        return "high"
    if queries_saved >= 10 or ms_saved >= 20:
        return "medium"
    return "low"


def _cache_candidates(requests: list[_Request], stacks: _Stacks) -> list[Suggestion]:
    """The same SELECT with the same params, on every request of an endpoint: cache it."""
    by_endpoint: dict[str, list[_Request]] = defaultdict(list)
    for r in requests:
        by_endpoint[r.endpoint].append(r)
    out = []
    for endpoint, rs in by_endpoint.items():
        if len(rs) < CACHE_MIN_REQUESTS:
            continue
        seen: dict[tuple[str, str], list[tuple[int, _Query]]] = defaultdict(list)
        for r in rs:
            first: dict[tuple[str, str], _Query] = {}
            for q in r.queries:
                if q.operation == "SELECT":
                    first.setdefault((q.sql, repr(q.params)), q)
            for key, match in first.items():
                seen[key].append((r.id, match))
        for (sql, _), hits in seen.items():
            if len(hits) < len(rs) or len(hits) < CACHE_MIN_REQUESTS:
                continue
            per_request = statistics.median(q.ms for _, q in hits)
            if per_request < CACHE_MIN_MS and not _AGGREGATE.search(sql):
                continue  # cheap row lookups (the session, the user) are not worth caching
            q = hits[0][1]
            site = stacks.app_site(q.stack_id)
            key = f"{endpoint.split(' ', 1)[-1].strip('/').replace('/', ':') or 'root'}:data"
            fix = f'cache.get_or_set("{key}", compute, timeout=300)'
            ids = [rid for rid, _ in hits]
            out.append(
                _make(
                    (endpoint, "cache_candidate", sql),
                    kind="cache_candidate",
                    title=f"Same query with the same result on every {endpoint} request",
                    detail=(
                        f"`{_shorten(sql)}` ran with the same parameters in all {len(rs)} "
                        f"requests of {endpoint} ({per_request:.1f} ms each). If its data may be "
                        f"a few minutes old, wrap the work{' at ' + site.short() if site else ''}"
                        f" in `{fix}`."
                    ),
                    fix=fix,
                    model=None,
                    field=None,
                    fire_site=site,
                    fix_site=site,
                    queries_saved=1,
                    ms_saved=per_request,
                    request_ids=ids,
                    endpoint=endpoint,
                )
            )
    return out


def _cache_recompute(requests: list[_Request], stacks: _Stacks) -> list[Suggestion]:
    """A cache read that misses on every request of an endpoint, then the value is rebuilt."""
    sites: dict[tuple[Any, ...], list[tuple[_Request, str, float, int]]] = defaultdict(list)
    hit_sites: set[tuple[Any, ...]] = set()
    for r in requests:
        for i, c in enumerate(r.cache):
            if c.op not in ("get", "aget") or len(c.keys) != 1:
                continue
            site_key = (r.endpoint, c.stack_id, c.template)
            if c.hit:
                hit_sites.add(site_key)
                continue
            refill = next(
                (
                    s
                    for s in r.cache[i + 1 :]
                    if s.op in ("set", "aset", "add", "aadd") and s.keys == c.keys
                ),
                None,
            )
            if refill is None:
                continue
            between = sum(
                1
                for q in r.queries
                if q.start_ns is not None and c.end_ns <= q.start_ns <= refill.start_ns
            )
            sites[site_key].append((r, c.keys[0], (refill.start_ns - c.end_ns) / 1e6, between))
    out = []
    for site_key, misses in sites.items():
        requests_hit = {r.id for r, *_ in misses}
        if len(requests_hit) < MIN_REPEATS or site_key in hit_sites:
            continue
        endpoint, stack_id, template = site_key
        keys = sorted({key for _, key, _, _ in misses})
        fire = template or stacks.app_site(stack_id)
        ms = statistics.median(ms for *_, ms, _ in misses)
        queries = int(statistics.median(n for *_, n in misses))
        where = fire.short() if fire else "?"
        if len(keys) > 1:
            stable = _stable_key(keys)
            fix = f'cache.get_or_set("{stable}", compute, timeout=300)'
            title = f"Cache key changes on every request: {len(misses)} misses, 0 hits"
            detail = (
                f"{where} reads a different key each time ({_key_pattern(keys)}), so it never "
                f"hits and rebuilds the value ({ms:.1f} ms, {queries} queries) on every "
                f"request, storing one more entry nobody reads. Use a stable key: `{fix}`."
            )
        else:
            fix = f'cache.set("{keys[0]}", value, timeout=300)'
            title = f"Cached value never found: {len(misses)} misses, 0 hits"
            detail = (
                f"{where} reads `{keys[0]}` and misses on every request although it is set "
                f"each time ({ms:.1f} ms to rebuild): the entry does not survive. Check the "
                f"timeout (0 or negative expires at once) and that the read and the write "
                f"use the same cache alias and a real backend (not DummyCache): `{fix}`."
            )
        out.append(
            _make(
                (endpoint, "cache_recompute", fire.file if fire else None, keys[0]),
                kind="cache_recompute",
                title=title,
                detail=detail,
                fix=fix,
                model=None,
                field=None,
                fire_site=fire,
                fix_site=stacks.app_site(stack_id),
                queries_saved=queries,
                ms_saved=ms,
                request_ids=sorted(requests_hit),
                endpoint=endpoint,
            )
        )
    return out


def _unused_eager_loads(requests: list[_Request]) -> list[Suggestion]:
    """A ``select_related`` path that no row of any request of the endpoint ever read.

    Per endpoint and queryset site, across every request: a join that one request reads is
    used, even if another request of the same view does not. Nested paths are left alone (the
    probe tracks reads on the first level), and so are admin changelists (Django joins there).
    """
    seen: dict[tuple[Any, ...], list[tuple[int, bool, _Query]]] = defaultdict(list)
    for r in requests:
        if _CHANGELIST.match(r.view):
            continue
        for q in r.queries:
            orm = q.orm
            paths, site = orm.get("select_related"), orm.get("site")
            if orm.get("op") != "fetch" or not isinstance(paths, list) or not orm.get("rows"):
                continue
            if not isinstance(site, dict) or not site.get("file"):
                continue
            touched = set(orm.get("touched") or ())
            for path in paths:
                if isinstance(path, str) and "__" not in path:
                    key = (r.endpoint, site["file"], site.get("line"), path)
                    seen[key].append((r.id, path in touched, q))
    out = []
    for (endpoint, file, line, path), entries in seen.items():
        if any(used for _, used, _ in entries):
            continue
        q = entries[-1][2]
        owner = _model_name(q.orm.get("model"))
        site = Site(file, line)
        fix = f'remove "{path}" from .select_related(...)'
        out.append(
            _make(
                (endpoint, "unused_eager_load", file, line, path),
                kind="unused_eager_load",
                title=f'Unused join: {owner} .select_related("{path}") is never read',
                detail=(
                    f"The queryset built at {site.short()} joins `{path}` into every {owner} "
                    f"row, but no request of {endpoint} ({len(entries)} seen) read it: the "
                    f"join and the extra columns are wasted. {fix.capitalize()}."
                ),
                fix=fix,
                model=q.orm.get("model"),
                field=path,
                fire_site=site,
                fix_site=site,
                queries_saved=0,
                ms_saved=0.0,
                request_ids=[rid for rid, _, _ in entries],
                endpoint=endpoint,
                severity="low",
            )
        )
    return out


def _make(key: tuple[Any, ...], **values: Any) -> Suggestion:
    digest = hashlib.sha1(repr(key).encode("utf-8")).hexdigest()[:12]
    values.setdefault("severity", _severity(values["queries_saved"], values["ms_saved"]))
    values["occurrences"] = values.get("occurrences", len(values["request_ids"]))
    return Suggestion(id=digest, **values)


def analyze_requests(requests: list[_Request], stacks: _Stacks) -> list[Suggestion]:
    merged: dict[tuple[Any, ...], list[tuple[_Request, _Finding]]] = {}
    for request in requests:
        for finding in _Detector(request, stacks).run():
            merged.setdefault(finding.key(request.endpoint), []).append((request, finding))
    by_endpoint: dict[str, list[_Request]] = defaultdict(list)
    for request in requests:
        by_endpoint[request.endpoint].append(request)
    suggestions = []
    for key, items in merged.items():
        endpoint = key[0]
        request_ids = [r.id for r, _ in items]
        newest = max(items, key=lambda item: item[0].id)[1]
        saved = max(f.queries_saved for _, f in items)
        ms = statistics.median(f.ms_saved for _, f in items)
        suggestion = _make(
            key,
            kind=newest.kind,
            title=newest.title,
            detail=newest.detail,
            fix=newest.fix,
            model=newest.model,
            field=newest.field,
            fire_site=newest.fire_site,
            fix_site=newest.fix_site,
            queries_saved=saved,
            ms_saved=ms,
            request_ids=request_ids,
            endpoint=endpoint,
        )
        _check_resolved(suggestion, [r for r, _ in items], by_endpoint[endpoint])
        suggestions.append(suggestion)
    suggestions += _cache_candidates(requests, stacks)
    suggestions += _cache_recompute(requests, stacks)
    suggestions += _unused_eager_loads(requests)
    suggestions.sort(
        key=lambda s: (s.status != "open", -s.ms_saved, -s.queries_saved, s.kind, s.id)
    )
    return suggestions


def _check_resolved(suggestion: Suggestion, hit: list[_Request], same: list[_Request]) -> None:
    """Resolved when every later successful request of the endpoint is free of it."""
    last = max(r.id for r in hit)
    later = [r for r in same if r.id > last and (r.status or 0) < 500]
    if not later:
        return
    suggestion.status = "resolved"
    suggestion.before = {
        "queries": statistics.median(r.query_count for r in hit),
        "ms": round(statistics.median(r.duration_ms for r in hit), 3),
    }
    suggestion.after = {
        "queries": statistics.median(r.query_count for r in later),
        "ms": round(statistics.median(r.duration_ms for r in later), 3),
    }
    suggestion.severity = "low"


def analyze(store: SessionStore) -> list[Suggestion]:
    """Every suggestion for a session, ranked (open first, by time then queries saved)."""
    return analyze_requests(list(_load(store)), _Stacks(store))
