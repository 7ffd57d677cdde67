"""Hand-built UNIT messages shaped like ``probe.recorder.Unit.to_message()`` output."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from djangoscope.app.core.store import SessionStore

AUTHOR_SQL = (
    'SELECT "bookshop_author"."id", "bookshop_author"."name" FROM "bookshop_author" '
    'WHERE "bookshop_author"."id" = %s LIMIT 21'
)
BOOKS_SQL = (
    'SELECT "bookshop_book"."id", "bookshop_book"."title", "bookshop_book"."author_id" '
    'FROM "bookshop_book" WHERE "bookshop_book"."published" ORDER BY "bookshop_book"."title" ASC'
)

IDENTITY = {
    "project": "bookshop",
    "settings_module": "bookshop.settings",
    "pid": 4242,
    "host": "127.0.0.1",
    "hostname": "devbox",
    "server": "runserver",
    "django": "5.2",
    "python": "3.11.7",
    "probe_version": "0.1.0",
    "argv": ["manage.py", "runserver"],
}

_seq = itertools.count(1)


def frames(view_line: int = 42, template: bool = True) -> list[dict[str, Any]]:
    """An outermost-first stack: Django internals, the view, then the template machinery."""
    stack = [
        {
            "file": "django/core/handlers/base.py",
            "line": 197,
            "func": "_get_response",
            "app": False,
        },
        {"file": "shop/views.py", "line": view_line, "func": "book_list", "app": True},
    ]
    if template:
        stack.append(
            {"file": "django/template/base.py", "line": 1008, "func": "render", "app": False}
        )
    stack.append(
        {"file": "django/db/models/query.py", "line": 2003, "func": "_fetch_all", "app": False}
    )
    return stack


def make_unit(
    n_queries: int = 3,
    *,
    method: str = "GET",
    path: str = "/books/",
    route: str = "books/",
    view: str = "shop.views.book_list",
    status: int = 200,
    duration_ms: float = 12.0,
    query_ms: float = 1.0,
    sql: str = AUTHOR_SQL,
    same_params: bool = False,
    cache_hits: int = 1,
    cache_misses: int = 1,
    exception: dict[str, Any] | None = None,
    view_line: int = 42,
    stack_ref: str = "s0",
    instances: dict[str, int] | None = None,
) -> dict[str, Any]:
    """A UNIT message: one books query, then ``n_queries`` author lookups (an N+1) fired from a
    template, plus ``cache_hits`` + ``cache_misses`` cache gets."""
    seq = next(_seq)
    q_ns = int(query_ms * 1e6)
    spans: list[dict[str, Any]] = [
        {"id": 0, "parent": None, "kind": "request", "name": "request", "start_ns": 0},
        {"id": 1, "parent": 0, "kind": "view", "name": view, "start_ns": 1000},
        {"id": 2, "parent": 1, "kind": "template", "name": "books/list.html", "start_ns": 2000},
    ]
    queries: list[dict[str, Any]] = []
    clock = 5000
    for i in range(n_queries + 1):
        first = i == 0
        queries.append(
            {
                "span": 1 if first else 2,
                "alias": "default",
                "vendor": "sqlite",
                "sql": BOOKS_SQL if first else sql,
                "params": [] if first else [1 if same_params else i],
                "many": False,
                "batch": None,
                "start_ns": clock,
                "duration_ns": q_ns,
                "rowcount": n_queries if first else 1,
                "atomic": False,
                "savepoint_depth": 0,
                "stack": "s1" if first else stack_ref,
                "template": None if first else ["books/list.html", 7],
                "orm": None
                if first
                else {"op": "forward_fk", "model": "bookshop.Book", "field": "author"},
                "error": None,
            }
        )
        spans.append(
            {
                "id": len(spans),
                "parent": 1 if first else 2,
                "kind": "sql",
                "name": (BOOKS_SQL if first else sql)[:60],
                "start_ns": clock,
                "duration_ns": q_ns,
                "ref": i,
            }
        )
        clock += q_ns + 1000
    cache = []
    for i, hit in enumerate([True] * cache_hits + [False] * cache_misses):
        cache.append(
            {
                "span": 1,
                "alias": "default",
                "backend": "django.core.cache.backends.locmem.LocMemCache",
                "op": "get",
                "keys": [f"book:{i}"],
                "hit": hit,
                "hits": None,
                "misses": None,
                "start_ns": clock,
                "duration_ns": 20_000,
                "stack": "s1",
                "template": None,
                "error": None,
            }
        )
        spans.append(
            {
                "id": len(spans),
                "parent": 1,
                "kind": "cache",
                "name": "get default",
                "start_ns": clock,
                "duration_ns": 20_000,
                "ref": i,
            }
        )
        clock += 21_000
    total_ns = int(duration_ms * 1e6)
    spans[0]["duration_ns"] = total_ns
    spans[1]["duration_ns"] = total_ns - 2000
    spans[2]["duration_ns"] = total_ns - 4000
    return {
        "kind": "http",
        "id": f"4242-{seq}",
        "pid": 4242,
        "thread_id": 140234567890,
        "thread_name": "Thread-1 (process_request_thread)",
        "async": False,
        "started_at": 1_700_000_000.0 + seq,
        "duration_ns": total_ns,
        "cpu_ns": total_ns // 2,
        "request": {
            "method": method,
            "path": path,
            "query_string": "page=1",
            "route": route,
            "view": view,
            "content_type": "text/plain",
            "bytes": 0,
        },
        "response": {
            "status": status,
            "bytes": 5120,
            "content_type": "text/html; charset=utf-8",
            "streaming": False,
        },
        "exception": exception,
        "spans": spans,
        "queries": queries,
        "cache": cache,
        "stacks": {stack_ref: frames(view_line), "s1": frames(view_line - 2, template=False)},
        "instances": instances if instances is not None else {"bookshop.Book": n_queries},
        "truncated": {},
    }


@pytest.fixture
def session_path(tmp_path):
    return tmp_path / "session.djscope"


@pytest.fixture
def store(session_path):
    with SessionStore.create(session_path) as s:
        yield s


@pytest.fixture
def process_id(store):
    return store.add_process(IDENTITY, "conn-1")


@pytest.fixture(name="make_unit")
def make_unit_fixture():
    """The :func:`make_unit` factory (fixtures, because conftest modules are not importable)."""
    return make_unit
