"""The demo bookshop: every page answers, with exactly the query count ``PAGES`` announces.

Pages run in-process with the Django test client, in autocommit (``transactional_db``), on the
default seed. The fixed twins must run fewer queries and show the same data as their problem page.
"""

from __future__ import annotations

import ast
import html
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.cache import caches
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from djangoscope.resources.demo import traffic
from djangoscope.resources.demo.bookshop.models import (
    Author,
    AuthorProfile,
    Book,
    Publisher,
    Review,
    Tag,
    Visit,
)
from djangoscope.resources.demo.bookshop.seed import isbn_for, seed
from djangoscope.resources.demo.pages import PAGES, all_paths

from .conftest import probe_importable

DEMO_DIR = Path(__file__).resolve().parents[2] / "resources" / "demo"
TX_PREFIXES = ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE", "ROLLBACK")
ROW = re.compile(r'<(li|tr) class="row">(.*?)</\1>', re.DOTALL)
TAG = re.compile(r"<[^>]+>")
FIXED = [page for page in PAGES if page["fixed"]]


def page_id(page: dict) -> str:
    return page["path"]


def rows(content: bytes) -> list[str]:
    """The visible text of each data row (``class="row"``) of a page."""
    text = content.decode()
    return [
        " ".join(html.unescape(TAG.sub(" ", match.group(2))).split())
        for match in ROW.finditer(text)
    ]


def fetch(path: str) -> tuple[int, bytes, list[str]]:
    """GET ``path`` in autocommit; the status, the body and the SQL Django logged."""
    client = Client(raise_request_exception=False)
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(path)
    return response.status_code, response.content, [q["sql"] for q in ctx.captured_queries]


def tx_count(queries: list[str]) -> int:
    return sum(sql.lstrip().upper().startswith(TX_PREFIXES) for sql in queries)


def clear_caches() -> None:
    for cache in caches.all():
        cache.clear()


# The table itself -----------------------------------------------------------------------------


def test_pages_table_matches_the_urlconf():
    for page in PAGES:
        assert reverse(page["name"]) == page["path"]
        if page["fixed"]:
            assert reverse(page["fixed_name"]) == page["fixed"]
            assert page["fixed_queries_warm"] < page["queries"]
            assert page["fixed_queries"] <= page["queries"]
        else:
            assert page["fixed_name"] is None and page["fixed_queries"] is None
    paths = all_paths()
    assert len(paths) == len(set(paths))
    assert paths[0] == "/"


# Every page, with its exact count -------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_page_runs_exactly_the_announced_queries(bookshop, page):
    status, _, queries = fetch(page["path"])
    assert status == page["status"]
    assert len(queries) == page["queries"], "\n".join(queries)
    assert tx_count(queries) == page["tx_statements"], "\n".join(queries)
    # Stable: the second request of a page runs the same number of queries.
    assert len(fetch(page["path"])[2]) == page["queries"]


@pytest.mark.parametrize("page", FIXED, ids=page_id)
def test_fixed_twin_runs_fewer_queries(bookshop, page):
    status, _, cold = fetch(page["fixed"])
    assert status == 200
    assert len(cold) == page["fixed_queries"], "\n".join(cold)
    assert tx_count(cold) == page["fixed_tx_statements"]
    _, _, warm = fetch(page["fixed"])
    assert len(warm) == page["fixed_queries_warm"], "\n".join(warm)
    assert len(warm) < page["queries"]


@pytest.mark.parametrize("page", [p for p in FIXED if p["path"] != "/books/touch/"], ids=page_id)
def test_fixed_twin_shows_the_same_data(bookshop, page):
    _, broken, _ = fetch(page["path"])
    clear_caches()
    _, fixed, _ = fetch(page["fixed"])
    assert rows(broken), "no data rows on the page"
    assert rows(fixed) == rows(broken)


def test_touch_twins_count_one_view_per_featured_book(bookshop):
    def views(content: bytes) -> list[tuple[str, int]]:
        found = re.findall(
            r'<tr class="row"><td>(.*?)</td><td class="num views">(\d+)</td>', content.decode()
        )
        return [(title, int(count)) for title, count in found]

    before = list(Book.objects.order_by("id").values_list("title", "views")[:20])
    _, broken, _ = fetch("/books/touch/")
    _, fixed, _ = fetch("/books/touch/fixed/")
    assert views(broken) == [(html.escape(t), v + 1) for t, v in before]
    assert views(fixed) == [(html.escape(t), v + 2) for t, v in before]
    assert list(Book.objects.order_by("id").values_list("views", flat=True)[:20]) == [
        v + 2 for _, v in before
    ]


def test_touch_accepts_post(bookshop):
    response = Client().post("/books/touch/")
    assert response.status_code == 200
    assert Client().put("/books/touch/").status_code == 405


def test_index_lists_every_page_with_its_count(bookshop):
    status, content, queries = fetch("/")
    assert status == 200 and queries == []
    text = content.decode()
    for page in PAGES:
        assert f'href="{page["path"]}"' in text
        assert f'<td class="num">{page["queries"]}</td>' in text
        if page["fixed"]:
            assert f'href="{page["fixed"]}"' in text


def test_problem_pages_link_their_fixed_twin(bookshop):
    _, content, _ = fetch("/books/")
    assert 'href="/books/fixed/"' in content.decode()
    _, content, _ = fetch("/books/fixed/")
    assert "Fixed twin of" in content.decode()


# Pages with more to check than a count --------------------------------------------------------


def test_reviews_import_keeps_the_table_bounded(bookshop):
    before = Review.objects.count()
    for path in ("/reviews/add/", "/reviews/add/", "/reviews/add/fixed/"):
        fetch(path)
        assert Review.objects.count() == before + 20
    assert Review.objects.filter(reviewer__startswith="feed:").count() == 20


def test_async_books_api(bookshop):
    status, content, _ = fetch("/api/books/")
    assert status == 200
    data = json.loads(content)
    assert data["count"] == 100
    assert [row["isbn"] for row in data["results"]] == [isbn_for(i) for i in range(20)]


def test_async_cache_api_counts_hits(bookshop):
    first = json.loads(fetch("/api/cache/")[1])
    second = json.loads(fetch("/api/cache/")[1])
    assert second["hits"] == first["hits"] + 1
    assert second["banner"] == first["banner"]


def test_async_views_under_the_async_client(bookshop):
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    client = AsyncClient()

    @async_to_sync
    async def get(path: str):
        return await client.get(path)

    with CaptureQueriesContext(connection) as ctx:
        response = get("/api/books/")
    assert response.status_code == 200 and len(ctx) == 2
    assert response.json()["count"] == 100
    with CaptureQueriesContext(connection) as ctx:
        response = get("/api/cache/")
    assert response.status_code == 200 and len(ctx) == 0


def test_stock_check_size_follows_n(bookshop):
    status, content, queries = fetch("/many/?n=50")
    assert status == 200 and len(queries) == 50
    assert "We stock <strong>50</strong> of the 50 ISBNs" in content.decode()
    _, content, queries = fetch("/many/fixed/")
    assert len(queries) == 1
    assert "We stock <strong>100</strong> of the 500 ISBNs" in content.decode()


def test_slow_cache_misses_every_time_and_the_fix_hits(bookshop):
    for _ in range(2):
        assert len(fetch("/slow-cache/")[2]) == 1
    assert len(fetch("/slow-cache/fixed/")[2]) == 1
    assert len(fetch("/slow-cache/fixed/")[2]) == 0


def test_slow_cache_alias_is_slow_on_misses_only(settings):
    import time

    settings.CACHES = {
        **settings.CACHES,
        "slow": {
            "BACKEND": "djangoscope.resources.demo.slowcache.SlowLocMemCache",
            "LOCATION": "test-slow",
            "OPTIONS": {"MISS_DELAY": 0.05},
        },
    }
    slow = caches["slow"]
    started = time.perf_counter()
    assert slow.get("absent", "default") == "default"
    assert time.perf_counter() - started >= 0.05
    slow.set("present", 1)
    started = time.perf_counter()
    assert slow.get("present") == 1
    assert time.perf_counter() - started < 0.05
    slow.clear()


def test_error_page_raises(bookshop):
    with pytest.raises(ZeroDivisionError):
        Client().get("/error/")


def test_raw_page_rolls_back_its_savepoint(bookshop):
    status, content, queries = fetch("/raw/")
    assert status == 200
    assert "already existed" in content.decode()
    assert [sql.split()[0] for sql in queries] == [
        "BEGIN",
        "SELECT",
        "20",  # executemany is logged as "20 times: UPDATE ..."
        "SAVEPOINT",
        "INSERT",
        "ROLLBACK",
        "RELEASE",
        "COMMIT",
    ]
    assert Tag.objects.filter(name="classic").count() == 1


def test_visit_writes_a_row_and_bumps_the_counter(bookshop):
    book = Book.objects.order_by("id").first()
    status, content, _ = fetch("/visit/")
    assert status == 200 and book.title in html.unescape(content.decode())
    assert Book.objects.get(pk=book.pk).views == book.views + 1
    assert Visit.objects.filter(path="/visit/").count() == 1


# Seed data ------------------------------------------------------------------------------------


def test_seed_makes_the_documented_shop(transactional_db):
    result = seed()
    assert result.created
    assert (result.publishers, result.authors, result.tags, result.books) == (10, 20, 12, 100)
    assert AuthorProfile.objects.count() == 20
    assert Book.objects.filter(published=True).count() == 100
    assert Book.objects.filter(publisher__isnull=True).count() == 10
    for book in Book.objects.prefetch_related("tags", "reviews"):
        assert 2 <= len(book.tags.all()) <= 3
        assert 1 <= len(book.reviews.all()) <= 3
    assert sorted(Author.objects.values_list("name", flat=True).distinct()) == sorted(
        Author.objects.values_list("name", flat=True)
    )
    assert Review.objects.count() == result.reviews


def test_seed_is_idempotent_and_deterministic(transactional_db):
    def snapshot() -> list[tuple]:
        return [
            (
                b.title,
                b.isbn,
                b.author.name,
                b.publisher.name if b.publisher else None,
                tuple(t.name for t in b.tags.all()),
                b.pages,
                str(b.price),
                b.views,
                tuple((r.reviewer, r.rating) for r in b.reviews.all()),
            )
            for b in Book.objects.select_related("author", "publisher").prefetch_related(
                "tags", "reviews"
            )
        ]

    seed()
    first = snapshot()
    assert not seed().created
    assert snapshot() == first
    assert seed(reset=True).created
    assert snapshot() == first
    assert Publisher.objects.count() == 10


def test_seed_command(transactional_db):
    call_command("seed_bookshop", "--books", "7", stdout=io.StringIO())
    assert Book.objects.count() == 7
    call_command("seed_bookshop", "--books", "12", stdout=io.StringIO())
    assert Book.objects.count() == 7  # already seeded: no-op
    call_command("seed_bookshop", "--books", "12", "--reset", stdout=io.StringIO())
    assert Book.objects.count() == 12


# The project runs on its own ------------------------------------------------------------------


@pytest.mark.django_db(databases="__all__")
def test_no_missing_migration():
    call_command("makemigrations", "bookshop", "--check", "--dry-run", verbosity=0)


def demo_env(tmp_path: Path, *, probe: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGOSCOPE")}
    # manage.py must use the demo settings even with pytest-django's value in the environment.
    env["DJANGO_SETTINGS_MODULE"] = "test_settings"
    env["DJANGOSCOPE_DEMO_DB"] = str(tmp_path / "db" / "bookshop.sqlite3")
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env["HOME"] = str(tmp_path)
    if not probe:
        env["DJANGOSCOPE_DEMO_NO_PROBE"] = "1"
    return env


def run(args: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_standalone_check_migrate_seed(tmp_path):
    env = demo_env(tmp_path, probe=False)
    as_module = [sys.executable, "-m", "djangoscope.resources.demo.manage"]
    as_file = [sys.executable, str(DEMO_DIR / "manage.py")]
    assert "no issues" in run([*as_module, "check"], env)
    run([*as_module, "migrate", "--noinput", "-v", "0"], env)
    assert "Seeded the bookshop: 100 books" in run([*as_file, "seed_bookshop"], env)
    assert "Already seeded" in run([*as_module, "seed_bookshop"], env)
    assert (tmp_path / "db" / "bookshop.sqlite3").is_file()
    assert not list(DEMO_DIR.rglob("*.sqlite3"))


@pytest.mark.skipif(not probe_importable(), reason="the probe's middleware does not import yet")
def test_standalone_check_with_the_probe(tmp_path):
    env = demo_env(tmp_path, probe=True)
    run([sys.executable, "-m", "djangoscope.resources.demo.manage", "check"], env)


ENTRY_POINTS = """
import wsgiref.util
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator

from djangoscope.resources.demo.wsgi import application as wsgi

environ = {"PATH_INFO": "/"}
wsgiref.util.setup_testing_defaults(environ)
statuses = []
body = b"".join(wsgi(environ, lambda status, headers: statuses.append(status)))
assert statuses == ["200 OK"], statuses
assert b"djangoscope demo bookshop" in body

from djangoscope.resources.demo.asgi import application as asgi


async def get(path):
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1")],
        "server": ("127.0.0.1", 8000),
    }
    communicator = ApplicationCommunicator(asgi, scope)
    await communicator.send_input({"type": "http.request"})
    start = await communicator.receive_output(5)
    await communicator.receive_output(5)
    return start["status"]


assert async_to_sync(get)("/api/cache/") == 200
print("entry points ok")
"""


def test_wsgi_and_asgi_entry_points(tmp_path):
    env = demo_env(tmp_path, probe=False)
    assert "entry points ok" in run([sys.executable, "-c", ENTRY_POINTS], env)


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="XDG cache dir on Linux only")
def test_default_database_lives_in_the_user_cache(tmp_path):
    env = demo_env(tmp_path, probe=False)
    del env["DJANGOSCOPE_DEMO_DB"]
    code = "from djangoscope.resources.demo import settings; print(settings.DATABASES)"
    databases = ast.literal_eval(run([sys.executable, "-c", code], env).strip())
    name = Path(databases["default"]["NAME"])
    assert name == tmp_path / "cache" / "djangoscope" / "demo" / "bookshop.sqlite3"
    assert DEMO_DIR not in name.parents


# The traffic driver ---------------------------------------------------------------------------


def test_traffic_drives_every_page(demo_server):
    results = traffic.drive(demo_server, rounds=2)
    assert [path for path, _ in results] == all_paths() * 2
    expected = {page["path"]: page["status"] for page in PAGES}
    for path, status in results:
        assert status == expected.get(path, 200), path
