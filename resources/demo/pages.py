"""Every demo page, the problem it shows and its exact query count: one table for all users.

The index page, the tests (tests/demo/test_demo_site.py), the benchmarks and ``make demo``'s
traffic driver all read ``PAGES``. Importing this module needs no Django settings.

``queries`` counts the statements Django logs (``connection.queries``, ``CaptureQueriesContext``,
``assertNumQueries``) for one request with the default seed (``seed_bookshop``: 100 books, 20
authors), in autocommit as under ``runserver``, on Django 4.2 and 5.2 alike. That includes
``tx_statements`` transaction-control entries: ``BEGIN``, ``SAVEPOINT``, ``ROLLBACK TO
SAVEPOINT`` and ``RELEASE SAVEPOINT`` (run through a cursor, so ``connection.execute_wrapper``
sees them too) and ``COMMIT`` (``connection.commit()``: logged by Django, but no execute wrapper
sees it). Inside a test transaction (``TestCase``, the ``db`` fixture) those entries differ.

=====================  =======  ======================  =====================================
page                   queries  fixed twin              fixed twin queries
=====================  =======  ======================  =====================================
/books/                101      /books/fixed/           1
/books/tags/           101      /books/tags/fixed/      2
/catalogue/            201      /catalogue/fixed/       2
/authors/              21       /authors/fixed/         1
/books/touch/          21       /books/touch/fixed/     2
/reviews/add/          24 (*)   /reviews/add/fixed/     5 (*)
/stats/                2        /stats/fixed/           1 on a cold cache, then 0
/slow-cache/           1        /slow-cache/fixed/      1 on a cold cache, then 0
/visit/                3        -
/api/books/            2        -
/api/cache/            0        -
/many/                 500      /many/fixed/            1
/raw/                  8 (*)    -
/error/ (HTTP 500)     1        -
=====================  =======  ======================  =====================================

(*) /reviews/add/ and its twin: BEGIN and COMMIT around the DELETE (resp. the whole import);
/raw/: BEGIN, SAVEPOINT, ROLLBACK TO SAVEPOINT, RELEASE SAVEPOINT, COMMIT.
"""

from __future__ import annotations

from typing import TypedDict


class Page(TypedDict):
    """One demo page. ``name`` and ``fixed_name`` are URL names (``reverse()`` them)."""

    path: str
    name: str
    title: str
    problem: str
    kind: str  # the suggestion kind djangoscope should report, "" when none is expected
    queries: int
    tx_statements: int  # of ``queries``: BEGIN, COMMIT, SAVEPOINT, RELEASE, ROLLBACK TO
    status: int
    fixed: str | None
    fixed_name: str | None
    fixed_queries: int | None  # first request after the cache is cleared
    fixed_queries_warm: int | None  # every later request
    fixed_tx_statements: int | None


def _page(
    path: str,
    name: str,
    title: str,
    problem: str,
    kind: str,
    queries: int,
    *,
    status: int = 200,
    tx_statements: int = 0,
    fixed_queries: int | None = None,
    fixed_queries_warm: int | None = None,
    fixed_tx_statements: int = 0,
) -> Page:
    has_fix = fixed_queries is not None
    if has_fix and fixed_queries_warm is None:
        fixed_queries_warm = fixed_queries
    return Page(
        path=path,
        name=f"bookshop:{name}",
        title=title,
        problem=problem,
        kind=kind,
        queries=queries,
        tx_statements=tx_statements,
        status=status,
        fixed=f"{path}fixed/" if has_fix else None,
        fixed_name=f"bookshop:{name}_fixed" if has_fix else None,
        fixed_queries=fixed_queries,
        fixed_queries_warm=fixed_queries_warm,
        fixed_tx_statements=fixed_tx_statements if has_fix else None,
    )


PAGES: list[Page] = [
    _page(
        "/books/",
        "books",
        "Books and their authors",
        "N+1 on a forward foreign key: the template reads book.author.name for each book.",
        "n_plus_one",
        101,
        fixed_queries=1,
    ),
    _page(
        "/books/tags/",
        "book_tags",
        "Books and their tags",
        "N+1 on a many-to-many: the template loops over book.tags.all for each book.",
        "n_plus_one",
        101,
        fixed_queries=2,
    ),
    _page(
        "/catalogue/",
        "catalogue",
        "The catalogue: books, authors and tags",
        "N+1 twice over: each row reads book.author.name and loops over book.tags.all.",
        "n_plus_one",
        201,
        fixed_queries=2,
    ),
    _page(
        "/authors/",
        "authors",
        "Authors and how many books they wrote",
        "COUNT in a loop: the template calls author.books.count for each author.",
        "related_count_in_loop",
        21,
        fixed_queries=1,
    ),
    _page(
        "/books/touch/",
        "books_touch",
        "Count a view of each featured book",
        "save() in a loop: 20 full-row UPDATEs where one UPDATE ... SET views = views + 1 does.",
        "update_in_loop",
        21,
        fixed_queries=2,
    ),
    _page(
        "/reviews/add/",
        "reviews_add",
        "Import reviews from a feed",
        "INSERTs in a loop, each in its own autocommit transaction: 20 create() calls.",
        "insert_in_loop",
        24,
        tx_statements=2,
        fixed_queries=5,
        fixed_tx_statements=2,
    ),
    _page(
        "/stats/",
        "stats",
        "Publisher statistics",
        "The same GROUP BY on every request, and twice in this one: cache it.",
        "duplicate_query",
        2,
        fixed_queries=1,
        fixed_queries_warm=0,
    ),
    _page(
        "/slow-cache/",
        "slow_cache",
        "Bestsellers (cached, in theory)",
        "A cache key that changes every request: a slow miss, the expensive work, a useless set.",
        "cache_recompute",
        1,
        fixed_queries=1,
        fixed_queries_warm=0,
    ),
    _page(
        "/visit/",
        "visit",
        "Book of the day",
        "Writes in the request path: an INSERT and an UPDATE, each committed on its own.",
        "slow_write_in_request",
        3,
    ),
    _page(
        "/api/books/",
        "api_books",
        "Books API (async)",
        "An async view on the async ORM: async for over a queryset, then acount().",
        "",
        2,
    ),
    _page(
        "/api/cache/",
        "api_cache",
        "Cache API (async)",
        "An async view using only the cache: aadd, aincr, aget, aset; no query.",
        "",
        0,
    ),
    _page(
        "/many/",
        "many",
        "Supplier stock check",
        "One EXISTS per ISBN of a 500-ISBN list (?n= changes the size): the benchmark page.",
        "get_in_loop",
        500,
        fixed_queries=1,
    ),
    _page(
        "/raw/",
        "raw",
        "Raw SQL in a transaction",
        "connection.cursor() with executemany in atomic(), and a savepoint that rolls back.",
        "",
        8,
        tx_statements=5,
    ),
    _page(
        "/error/",
        "error",
        "A view that crashes",
        "An unhandled ZeroDivisionError after one query: the probe must capture the exception.",
        "",
        1,
        status=500,
    ),
]

PAGES_BY_NAME: dict[str, Page] = {page["name"]: page for page in PAGES}


def all_paths() -> list[str]:
    """The index, then every page and its fixed twin, in ``PAGES`` order."""
    paths = ["/"]
    for page in PAGES:
        paths.append(page["path"])
        if page["fixed"]:
            paths.append(page["fixed"])
    return paths
