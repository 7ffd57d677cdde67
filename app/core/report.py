"""``djangoscope report``: a session summarized as the JSON contract of DESIGN.md, or as text.

:func:`build_report` reads a :class:`~djangoscope.app.core.store.SessionStore` once (request
summaries, then every query in one streamed pass) and returns plain JSON-ready data:

- ``requests``: one row per request, straight from the store's summary columns;
- ``endpoints``: requests grouped by (method, route), the route falling back to the path when
  the URL did not resolve; nearest-rank percentiles of time and query count;
- ``duplicates``: the same (alias, SQL, params) run more than once inside one request;
- ``similar``: the same normalized SQL (fingerprint) run more than once inside one request,
  the N+1 signal;
- ``suggestions``: the fix suggestions of :mod:`.analysis`, ranked (open ones first).

:func:`format_report` renders that dict as fixed-width text no wider than 100 columns.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from .analysis import analyze
from .fingerprint import TRANSACTION_OPERATIONS
from .store import SessionStore

__all__ = ["REPORT_VERSION", "build_report", "format_report", "percentile"]

#: The ``version`` key of ``report --json``; bumped only on incompatible changes.
REPORT_VERSION = 1

#: Call sites listed per duplicate/similar group; the rest are counted in ``other_sites``.
MAX_CALL_SITES = 10


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (the smallest value with at least p % of values <= it)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


# -- building ----------------------------------------------------------------------------------


def build_report(store: SessionStore) -> dict[str, Any]:
    """The whole session as the ``report --json`` contract (see DESIGN.md and the module doc)."""
    requests = [_request_entry(row) for row in store.iter_requests()]
    groups = _QueryGroups(store)
    groups.scan(store.iter_all_queries())
    return {
        "version": REPORT_VERSION,
        "session": _session(store, requests),
        "requests": requests,
        "endpoints": _endpoints(requests),
        "duplicates": groups.duplicates(),
        "similar": groups.similar(),
        "suggestions": [s.to_dict() for s in analyze(store)],
    }


def _request_entry(row: dict[str, Any]) -> dict[str, Any]:
    exception = None
    if row.get("exception_type"):
        exception = {"type": row["exception_type"], "message": row.get("exception_message")}
    return {
        "id": row["id"],
        "method": row["method"],
        "path": row["path"],
        "route": row["route"],
        "view": row["view"],
        "status": row["status"],
        "duration_ms": _ms(row["duration_ms"]),
        "db_ms": _ms(row["db_ms"]),
        "cpu_ms": _ms(row["cpu_ms"]),
        "query_count": row["query_count"],
        "duplicate_query_count": row["duplicate_query_count"],
        "similar_query_count": row["similar_query_count"],
        "cache_calls": row["cache_calls"],
        "cache_hits": row["cache_hits"],
        "cache_misses": row["cache_misses"],
        "template_count": row["template_count"],
        "instance_count": row["instance_count"],
        "started_at": row["started_at"],
        "process_id": row["process_id"],
        "pid": row["pid"],
        "kind": row["kind"],
        "exception": exception,
        "truncated": row["truncated"] if isinstance(row["truncated"], dict) else None,
    }


def _session(store: SessionStore, requests: list[dict[str, Any]]) -> dict[str, Any]:
    meta = store.meta()
    processes = [
        {
            key: row.get(key)
            for key in (
                "id",
                "project",
                "settings_module",
                "pid",
                "host",
                "hostname",
                "server",
                "django",
                "python",
                "probe_version",
                "connection",
                "argv",
                "connected_at",
                "disconnected_at",
            )
        }
        for row in store.processes()
    ]
    starts = [r["started_at"] for r in requests if r["started_at"] is not None]
    ends = [
        r["started_at"] + (r["duration_ms"] or 0) / 1000
        for r in requests
        if r["started_at"] is not None
    ]
    started = min(starts) if starts else None
    ended = max(ends) if ends else None
    try:
        pruned = int(meta.get("pruned_requests") or 0)
    except ValueError:
        pruned = 0
    return {
        "file": store.path,
        "schema_version": store.schema_version,
        "djangoscope_version": meta.get("djangoscope_version"),
        "created_at": _float_or_none(meta.get("created_at")),
        "processes": processes,
        "process_count": len(processes),
        "request_count": len(requests),
        "started_at": started,
        "ended_at": ended,
        "duration_s": round(ended - started, 3) if started is not None and ended else None,
        "pruned_requests": pruned,
    }


def _float_or_none(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _endpoints(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in requests:
        groups.setdefault((r["method"], r["route"] or r["path"]), []).append(r)
    endpoints = []
    for (method, route), rows in groups.items():
        durations = [r["duration_ms"] for r in rows if r["duration_ms"] is not None]
        queries = [r["query_count"] for r in rows]
        db = [r["db_ms"] for r in rows if r["db_ms"] is not None]
        views = Counter(r["view"] for r in rows if r["view"])
        statuses = Counter(str(r["status"]) for r in rows if r["status"] is not None)
        endpoints.append(
            {
                "route": route,
                "method": method,
                "view": views.most_common(1)[0][0] if views else "",
                "grouped_by": "route" if rows[0]["route"] else "path",
                "count": len(rows),
                "p50_ms": _ms(percentile(durations, 50)),
                "p95_ms": _ms(percentile(durations, 95)),
                "max_ms": _ms(max(durations)) if durations else None,
                "mean_ms": _ms(sum(durations) / len(durations)) if durations else None,
                "db_p50_ms": _ms(percentile(db, 50)),
                "queries_p50": percentile(queries, 50),
                "queries_max": max(queries) if queries else 0,
                "duplicates_max": max(r["duplicate_query_count"] for r in rows),
                "errors": sum(1 for r in rows if r["exception"] or (r["status"] or 0) >= 500),
                "statuses": dict(sorted(statuses.items())),
                "request_ids": [r["id"] for r in rows],
            }
        )
    endpoints.sort(key=lambda e: (-(e["p95_ms"] or 0), e["route"], e["method"]))
    return endpoints


class _Group:
    """One duplicate or similar group, accumulated across the requests it repeats in."""

    __slots__ = ("count", "example", "max_per_request", "request_ids", "sites", "total_ns")

    def __init__(self, example: dict[str, Any]) -> None:
        self.example = example
        self.count = 0
        self.total_ns = 0
        self.max_per_request = 0
        self.request_ids: list[int] = []
        self.sites: Counter[tuple[int | None, str | None, int | None]] = Counter()

    def add(self, request_id: int, rows: list[dict[str, Any]]) -> None:
        self.count += len(rows)
        self.max_per_request = max(self.max_per_request, len(rows))
        self.request_ids.append(request_id)
        for q in rows:
            self.total_ns += q["duration_ns"] or 0
            self.sites[(q["stack_id"], q["template_name"], q["template_line"])] += 1

    def common(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "redundant": self.count - len(self.request_ids),
            "requests": len(self.request_ids),
            "request_ids": self.request_ids,
            "max_per_request": self.max_per_request,
            "total_ms": _ms(self.total_ns / 1e6),
        }


class _QueryGroups:
    """One streamed pass over every query: duplicates and similar groups per request."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self._duplicates: dict[tuple[str, str, str], _Group] = {}
        self._similar: dict[str, _Group] = {}
        self._stacks: dict[int, dict[str, Any] | None] = {}

    def scan(self, rows: Iterable[dict[str, Any]]) -> None:
        current: int | None = None
        batch: list[dict[str, Any]] = []
        for q in rows:
            if q["request_id"] != current:
                self._flush(current, batch)
                current, batch = q["request_id"], []
            if q["operation"] not in TRANSACTION_OPERATIONS:
                batch.append(q)
        self._flush(current, batch)

    def _flush(self, request_id: int | None, rows: list[dict[str, Any]]) -> None:
        if request_id is None or len(rows) < 2:
            return
        exact: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        shapes: dict[str, list[dict[str, Any]]] = {}
        for q in rows:
            key = (q["alias"], q["sql"], _params_key(q["params"]))
            exact.setdefault(key, []).append(q)
            shapes.setdefault(q["fingerprint"], []).append(q)
        for key, same in exact.items():
            if len(same) > 1:
                group = self._duplicates.get(key)
                if group is None:
                    group = self._duplicates[key] = _Group(same[0])
                group.add(request_id, same)
        for digest, same in shapes.items():
            if len(same) > 1:
                group = self._similar.get(digest)
                if group is None:
                    group = self._similar[digest] = _Group(same[0])
                group.add(request_id, same)

    def _call_sites(self, group: _Group) -> tuple[list[dict[str, Any]], int]:
        sites = []
        for (stack_id, template, line), count in group.sites.most_common():
            frame = self._stack(stack_id)
            sites.append(
                {
                    "file": frame.get("call_file") if frame else None,
                    "line": frame.get("call_line") if frame else None,
                    "func": frame.get("call_func") if frame else None,
                    "template": f"{template}:{line}" if template and line else template,
                    "count": count,
                }
            )
        return sites[:MAX_CALL_SITES], max(0, len(sites) - MAX_CALL_SITES)

    def _stack(self, stack_id: int | None) -> dict[str, Any] | None:
        if stack_id is None:
            return None
        if stack_id not in self._stacks:
            self._stacks[stack_id] = self.store.stack(stack_id)
        return self._stacks[stack_id]

    def duplicates(self) -> list[dict[str, Any]]:
        out = []
        for (alias, sql, _), group in self._duplicates.items():
            sites, other = self._call_sites(group)
            out.append(
                {
                    "alias": alias,
                    "sql": sql,
                    "params": group.example["params"],
                    "fingerprint": group.example["fingerprint"],
                    **group.common(),
                    "call_sites": sites,
                    "other_sites": other,
                }
            )
        out.sort(key=lambda d: (-d["redundant"], -(d["total_ms"] or 0), d["sql"]))
        return out

    def similar(self) -> list[dict[str, Any]]:
        out = []
        for digest, group in self._similar.items():
            info = self.store.fingerprint_info(digest) or {}
            sites, other = self._call_sites(group)
            out.append(
                {
                    "fingerprint": digest,
                    "normalized": info.get("normalized") or group.example["sql"],
                    "operation": info.get("operation") or group.example["operation"],
                    "tables": info.get("tables") or [],
                    "alias": group.example["alias"],
                    "example_sql": group.example["sql"],
                    **group.common(),
                    "call_sites": sites,
                    "other_sites": other,
                }
            )
        out.sort(key=lambda d: (-d["redundant"], -(d["total_ms"] or 0), d["normalized"]))
        return out


def _params_key(params: Any) -> str:
    # Stored params are canonical JSON text; the read API decoded it, so re-encode stably.
    return repr(params)


# -- text --------------------------------------------------------------------------------------

WIDTH = 100


def _cut(text: Any, width: int) -> str:
    """One line, at most ``width`` characters, "…" where it was cut."""
    value = " ".join(str("" if text is None else text).split())
    if width <= 0:
        return ""
    return value if len(value) <= width else value[: width - 1] + "…"


def _cut_left(text: str, width: int) -> str:
    """Keep the end (the file name) of a long path."""
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _table(
    headers: Sequence[str], widths: Sequence[int], align: str, rows: Iterable[Sequence[Any]]
) -> list[str]:
    """Fixed-width rows; ``align`` has one "<" or ">" per column."""

    def line(cells: Sequence[Any]) -> str:
        parts = []
        for cell, width, how in zip(cells, widths, align, strict=True):
            text = _cut(cell, width)
            parts.append(text.ljust(width) if how == "<" else text.rjust(width))
        return " ".join(parts).rstrip()

    out = [line(headers), " ".join("-" * w for w in widths)]
    out.extend(line(row) for row in rows)
    return out


def _common_root(report: dict[str, Any]) -> str:
    """The folder all call-site files share, so the text report can show short paths."""
    files = {
        site["file"]
        for key in ("duplicates", "similar")
        for group in report.get(key, [])
        for site in group.get("call_sites", [])
        if isinstance(site.get("file"), str) and os.path.isabs(site["file"])
    }
    if not files:
        return ""
    root = os.path.commonpath([os.path.dirname(f) for f in files])
    return "" if root in ("", os.sep) else root


def _site_text(site: dict[str, Any], width: int, root: str = "") -> str:
    where = []
    if site.get("file"):
        file = site["file"]
        if root and file.startswith(root + os.sep):
            file = file[len(root) + 1 :]
        where.append(f"{file}:{site['line']}" if site.get("line") else file)
        if site.get("func"):
            where[-1] += f" in {site['func']}"
    if site.get("template"):
        where.append(f"template {site['template']}")
    text = ", ".join(where) or "unknown call site"
    return _cut_left(text, width - 6) + f" ({site['count']}x)"


def format_report(report: dict[str, Any], max_requests: int = 50, top: int = 10) -> str:
    """Readable fixed-width text (at most 100 columns) of a :func:`build_report` dict.

    Shows at most ``max_requests`` requests (the slowest, in id order) and the ``top``
    duplicate and similar query groups; ``--json`` has everything.
    """
    session = report.get("session", {})
    lines = [_cut(f"djangoscope report: {session.get('file', '?')}", WIDTH)]
    span = ""
    if session.get("started_at") is not None:
        span = (
            f" | {_when(session['started_at'])} to {_when(session.get('ended_at'))}"
            f" ({_num(session.get('duration_s'))} s)"
        )
    lines.append(
        _cut(
            f"{session.get('process_count', 0)} process(es) | "
            f"{session.get('request_count', 0)} request(s){span} | "
            f"{session.get('pruned_requests', 0)} pruned",
            WIDTH,
        )
    )
    lines += ["", *_requests_text(report.get("requests", []), max_requests)]
    lines += ["", *_endpoints_text(report.get("endpoints", []))]
    root = _common_root(report)
    if root:
        lines += ["", _cut(f"Call sites below are relative to {root}", WIDTH)]
    duplicates = report.get("duplicates", [])
    lines += ["", *_groups_text("Duplicate queries", duplicates, top, True, root)]
    lines += ["", *_groups_text("Similar queries", report.get("similar", []), top, False, root)]
    lines += ["", *_suggestions_text(report.get("suggestions", []), root)]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _requests_text(requests: list[dict[str, Any]], limit: int) -> list[str]:
    shown = requests
    title = f"Requests ({len(requests)})"
    if len(requests) > limit:
        slowest = sorted(requests, key=lambda r: -(r["duration_ms"] or 0))[:limit]
        shown = sorted(slowest, key=lambda r: r["id"])
        title = f"Requests: the {limit} slowest of {len(requests)}"
    if not requests:
        return [title, "  no requests recorded"]
    headers = ("ID", "METHOD", "ST", "PATH", "TIME ms", "DB ms", "QUERIES", "DUP", "SIM", "CACHE")
    fixed = (6, 7, 3, 0, 9, 8, 7, 5, 5, 9)
    path_width = WIDTH - sum(fixed) - (len(fixed) - 1)
    widths = tuple(path_width if w == 0 else w for w in fixed)
    rows = [
        (
            r["id"],
            r["method"],
            r["status"] if r["status"] is not None else ("ERR" if r.get("exception") else "-"),
            r["path"] + (" !" + r["exception"]["type"] if r.get("exception") else ""),
            _num(r["duration_ms"]),
            _num(r["db_ms"]),
            r["query_count"],
            r["duplicate_query_count"],
            r.get("similar_query_count", 0),
            f"{r['cache_hits']}/{r['cache_misses']}",
        )
        for r in shown
    ]
    return [title, *_table(headers, widths, "><><>>>>>>", rows)]


def _endpoints_text(endpoints: list[dict[str, Any]]) -> list[str]:
    title = f"Endpoints ({len(endpoints)})"
    if not endpoints:
        return [title, "  none"]
    headers = ("METHOD", "ROUTE", "COUNT", "p50 ms", "p95 ms", "Q p50", "Q max", "ERR")
    fixed = (7, 0, 6, 9, 9, 6, 6, 4)
    route_width = WIDTH - sum(fixed) - (len(fixed) - 1)
    widths = tuple(route_width if w == 0 else w for w in fixed)
    rows = [
        (
            e["method"],
            e["route"],
            e["count"],
            _num(e["p50_ms"]),
            _num(e["p95_ms"]),
            e["queries_p50"] if e["queries_p50"] is not None else "-",
            e["queries_max"],
            e.get("errors", 0),
        )
        for e in endpoints
    ]
    return [title, *_table(headers, widths, "<<>>>>>>", rows)]


def _groups_text(
    title: str, groups: list[dict[str, Any]], top: int, exact: bool, root: str = ""
) -> list[str]:
    rule = "same SQL and params" if exact else "same normalized SQL"
    out = [f"{title} ({rule} within one request): {len(groups)}"]
    if not groups:
        return [*out, "  none"]
    for group in groups[:top]:
        header = (
            f"{group['count']}x in {group['requests']} request(s), "
            f"{group['redundant']} redundant, {_num(group['total_ms'])} ms"
            f" [{group.get('alias') or '?'}], requests "
            + ",".join(str(i) for i in group["request_ids"])
        )
        out.append("  " + _cut(header, WIDTH - 2))
        out.append("    " + _cut(group["sql"] if exact else group["normalized"], WIDTH - 4))
        if exact and group.get("params") is not None:
            out.append("    " + _cut(f"params: {group['params']}", WIDTH - 4))
        for site in group["call_sites"]:
            out.append("      at " + _site_text(site, WIDTH - 9, root))
        if group.get("other_sites"):
            out.append(f"      and {group['other_sites']} more call site(s)")
    if len(groups) > top:
        out.append(f"  ... {len(groups) - top} more (see --json)")
    return out


def _suggestions_text(suggestions: list[dict[str, Any]], root: str = "") -> list[str]:
    open_ = [s for s in suggestions if s.get("status") != "resolved"]
    resolved = [s for s in suggestions if s.get("status") == "resolved"]
    out = [f"Suggestions ({len(open_)} open, {len(resolved)} resolved)"]
    if not suggestions:
        return [*out, "  none"]
    for s in open_:
        parts = []
        if s.get("queries_saved"):
            parts.append(f"-{s['queries_saved']} queries")
        if s.get("ms_saved"):
            parts.append(f"-{_num(s['ms_saved'])} ms")
        saved = f"  ({', '.join(parts)})" if parts else ""
        out.append(_cut(f"  [{s.get('severity')}] {s.get('endpoint')}: {s.get('title')}", WIDTH))
        out.append("    " + _cut(f"fix: {s.get('fix')}{saved}", WIDTH - 4))
        for label in ("fix_site", "fire_site"):
            site = s.get(label)
            if site and site.get("file"):
                file = site["file"]
                if root and file.startswith(root + os.sep):
                    file = file[len(root) + 1 :]
                where = f"{file}:{site['line']}" if site.get("line") else file
                out.append(
                    f"    {label.replace('_', ' ') + ':':<10} {_cut_left(where, WIDTH - 15)}"
                )
    for s in resolved:
        before, after = s.get("before") or {}, s.get("after") or {}
        out.append(
            _cut(
                f"  [resolved] {s.get('endpoint')}: {s.get('fix')}: "
                f"{_num(before.get('queries'), 0)} -> {_num(after.get('queries'), 0)} queries, "
                f"{_num(before.get('ms'))} -> {_num(after.get('ms'))} ms",
                WIDTH,
            )
        )
    return out
