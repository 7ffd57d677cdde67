"""build_report / format_report: the ``report --json`` contract and its text rendering."""

from __future__ import annotations

import json

import pytest

from djangoscope.app.core.report import build_report, format_report, percentile
from djangoscope.app.core.store import SessionStore

LONG_PATH = "/search/" + "very-long-segment/" * 10


@pytest.fixture
def report_store(store, make_unit):
    """Five N+1 book pages, two author pages with exact duplicates, a 404 and a 500."""
    pid = store.add_process({"project": "bookshop", "pid": 4242}, "c-1")
    other = store.add_process({"project": "bookshop", "pid": 4243}, "c-2")
    for ms in (50, 10, 40, 20, 30):
        store.add_unit(pid, make_unit(10, duration_ms=ms, query_ms=0.5))
    for _ in range(2):
        store.add_unit(
            other,
            make_unit(
                3,
                same_params=True,
                path="/authors/1/",
                route="authors/<int:pk>/",
                view="shop.views.author_detail",
                view_line=77,
                duration_ms=15,
            ),
        )
    store.add_unit(pid, make_unit(0, path=LONG_PATH, route="", status=404, duration_ms=5))
    store.add_unit(
        pid,
        make_unit(
            1,
            path="/error/",
            route="error/",
            status=500,
            duration_ms=8,
            exception={"type": "ValueError", "message": "boom", "traceback": "Traceback..."},
        ),
    )
    store.add_unit(pid, make_unit(1, method="POST", duration_ms=90))
    return store


@pytest.fixture
def report(report_store):
    return build_report(report_store)


# -- percentiles -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([], 50, None),
        ([7], 50, 7),
        ([7], 95, 7),
        ([1, 2, 3, 4], 50, 2),
        ([1, 2, 3, 4], 95, 4),
        ([50, 10, 40, 20, 30], 50, 30),
        ([50, 10, 40, 20, 30], 95, 50),
        (list(range(1, 21)), 95, 19),
        (list(range(1, 21)), 100, 20),
        (list(range(1, 101)), 95, 95),
        ([3, 1, 2], 0, 1),
    ],
)
def test_nearest_rank_percentile(values, p, expected):
    assert percentile(values, p) == expected


# -- JSON contract -----------------------------------------------------------------------------

CONTRACT_REQUEST = {
    "id": int,
    "method": str,
    "path": str,
    "route": str,
    "view": str,
    "status": int,
    "duration_ms": float,
    "db_ms": float,
    "query_count": int,
    "duplicate_query_count": int,
    "cache_hits": int,
    "cache_misses": int,
}
CONTRACT_ENDPOINT = {
    "route": str,
    "count": int,
    "p50_ms": float,
    "p95_ms": float,
    "queries_p50": int,
    "queries_max": int,
}


def test_contract_keys_and_types(report):
    assert report["version"] == 1
    assert set(report) >= {
        "version",
        "session",
        "requests",
        "endpoints",
        "duplicates",
        "similar",
        "suggestions",
    }
    assert isinstance(report["suggestions"], list)
    for row in report["requests"]:
        for key, kind in CONTRACT_REQUEST.items():
            assert isinstance(row[key], kind), (key, row[key])
    for row in report["endpoints"]:
        for key, kind in CONTRACT_ENDPOINT.items():
            assert isinstance(row[key], kind), (key, row[key])
    # Plain JSON all the way down, and it survives a round trip unchanged.
    assert json.loads(json.dumps(report)) == report


def test_session_block(report):
    session = report["session"]
    assert session["file"].endswith("session.djscope")
    assert session["process_count"] == 2
    assert [p["pid"] for p in session["processes"]] == [4242, 4243]
    assert session["request_count"] == len(report["requests"]) == 10
    assert session["started_at"] < session["ended_at"]
    assert session["duration_s"] == pytest.approx(session["ended_at"] - session["started_at"])
    assert session["pruned_requests"] == 0
    assert session["schema_version"] == 1


def test_requests_mirror_the_store(report):
    first = report["requests"][0]
    assert first["path"] == "/books/" and first["route"] == "books/"
    assert first["query_count"] == 11
    assert first["similar_query_count"] == 9
    assert first["duplicate_query_count"] == 0
    assert first["db_ms"] == pytest.approx(5.5)
    assert (first["cache_hits"], first["cache_misses"]) == (1, 1)
    assert first["exception"] is None
    error = next(r for r in report["requests"] if r["path"] == "/error/")
    assert error["status"] == 500
    assert error["exception"] == {"type": "ValueError", "message": "boom"}
    authors = [r for r in report["requests"] if r["path"] == "/authors/1/"]
    assert [r["duplicate_query_count"] for r in authors] == [2, 2]
    assert [r["id"] for r in report["requests"]] == sorted(r["id"] for r in report["requests"])


def test_endpoints_group_by_route_then_path(report):
    by_key = {(e["method"], e["route"]): e for e in report["endpoints"]}
    books = by_key[("GET", "books/")]
    assert books["count"] == 5
    assert books["p50_ms"] == 30.0 and books["p95_ms"] == 50.0
    assert books["max_ms"] == 50.0 and books["mean_ms"] == 30.0
    assert books["queries_p50"] == 11 and books["queries_max"] == 11
    assert books["view"] == "shop.views.book_list"
    assert books["grouped_by"] == "route"
    assert books["statuses"] == {"200": 5}
    assert len(books["request_ids"]) == 5
    # The POST to the same route is its own endpoint.
    assert by_key[("POST", "books/")]["count"] == 1
    # No route (a 404): grouped by path.
    unresolved = by_key[("GET", LONG_PATH)]
    assert unresolved["grouped_by"] == "path" and unresolved["count"] == 1
    assert by_key[("GET", "error/")]["errors"] == 1
    assert sum(e["count"] for e in report["endpoints"]) == 10
    # Slowest (p95) first.
    p95s = [e["p95_ms"] for e in report["endpoints"]]
    assert p95s == sorted(p95s, reverse=True)


def test_duplicates_are_exact_repeats_within_a_request(report, report_store):
    (dup,) = report["duplicates"]
    authors = [r["id"] for r in report["requests"] if r["path"] == "/authors/1/"]
    assert dup["request_ids"] == authors
    assert dup["count"] == 6 and dup["requests"] == 2 and dup["redundant"] == 4
    assert dup["max_per_request"] == 3
    assert dup["alias"] == "default"
    assert dup["params"] == [1]
    assert dup["sql"].startswith('SELECT "bookshop_author"."id"')
    assert dup["total_ms"] == pytest.approx(6.0)
    (site,) = dup["call_sites"]
    assert (site["file"], site["line"], site["func"]) == ("shop/views.py", 77, "book_list")
    assert site["template"] == "books/list.html:7"
    assert site["count"] == 6
    # The request summaries agree with the session-wide groups.
    assert dup["redundant"] == sum(
        r["duplicate_query_count"] for r in report["requests"] if r["id"] in authors
    )


def test_similar_groups_the_n_plus_one(report):
    top = report["similar"][0]
    assert top["normalized"] == (
        'SELECT "bookshop_author"."id", "bookshop_author"."name" FROM "bookshop_author" '
        'WHERE "bookshop_author"."id" = ? LIMIT ?'
    )
    assert top["operation"] == "SELECT" and top["tables"] == ["bookshop_author"]
    assert len(top["fingerprint"]) == 16
    # Five book pages with 10 lookups each, two author pages with 3 each.
    assert top["count"] == 5 * 10 + 2 * 3
    assert top["redundant"] == 5 * 9 + 2 * 2
    assert len(top["request_ids"]) == 7
    assert top["total_ms"] == pytest.approx(5 * 10 * 0.5 + 2 * 3 * 1.0)
    lines = {(s["line"], s["count"]) for s in top["call_sites"]}
    assert lines == {(42, 50), (77, 6)}
    # Pages with a single lookup (the error and POST pages) are not "similar".
    assert not any(
        r["id"] in top["request_ids"] for r in report["requests"] if r["query_count"] <= 2
    )


def test_suggestions_come_from_the_analysis_in_the_contract_shape(report):
    """The synthetic session repeats identical queries: the analysis reports them."""
    assert report["suggestions"], "the fixture's duplicate queries give suggestions"
    for suggestion in report["suggestions"]:
        assert set(suggestion) >= {
            "kind", "severity", "title", "detail", "fix", "model", "field", "fire_site",
            "fix_site", "queries_saved", "ms_saved", "request_ids",
        }  # fmt: skip
        assert isinstance(suggestion["request_ids"], list) and suggestion["request_ids"]
        assert suggestion["fire_site"] is None or set(suggestion["fire_site"]) == {"file", "line"}


def test_empty_session(store):
    report = build_report(store)
    assert report["requests"] == report["endpoints"] == report["duplicates"] == []
    assert report["similar"] == report["suggestions"] == []
    assert report["session"]["request_count"] == 0
    assert report["session"]["started_at"] is None
    text = format_report(report)
    assert "no requests recorded" in text


def test_report_reads_a_read_only_session(report_store, session_path):
    with SessionStore.open(session_path) as reader:
        assert build_report(reader)["session"]["request_count"] == 10


# -- text --------------------------------------------------------------------------------------


def test_text_report_fits_100_columns_and_names_the_call_sites(report):
    text = format_report(report)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    for section in ("Requests (10)", "Endpoints (", "Duplicate queries", "Similar queries"):
        assert any(line.startswith(section) for line in lines), section
    assert any(line.startswith("Suggestions (") for line in lines)
    assert "/authors/1/" in text and "authors/<int:pk>/" in text
    assert "at shop/views.py:77 in book_list, template books/list.html:7 (6x)" in text
    assert "at shop/views.py:42 in book_list, template books/list.html:7 (50x)" in text
    assert "!ValueError" in text
    # Long paths and SQL are cut with an ellipsis, never wrapped.
    assert LONG_PATH not in text
    assert any("/search/very-long-segment/" in line and "…" in line for line in lines)
    assert any(
        line.strip().startswith('SELECT "bookshop_author"') and line.endswith("…") for line in lines
    )


def test_text_report_rows_line_up(report):
    lines = format_report(report).splitlines()
    start = lines.index(next(line for line in lines if line.startswith("Requests")))
    header, rule, *rows = lines[start + 1 : start + 13]
    assert header.split()[:4] == ["ID", "METHOD", "ST", "PATH"]
    assert set(rule) == {"-", " "}
    # Right-aligned numeric columns end at the same offset as their header.
    time_end = header.index("TIME ms") + len("TIME ms")
    for row in rows:
        assert row[time_end - 1].isdigit(), row


def test_text_report_limits_the_requests_table(report):
    text = format_report(report, max_requests=3)
    assert "the 3 slowest of 10" in text
    table = text.split("Requests")[1].split("Endpoints")[0]
    assert " 90.0 " in table and " 50.0 " in table and " 40.0 " in table
    assert " 10.0 " not in table


def test_text_report_shows_call_sites_relative_to_their_common_folder():
    from djangoscope.app.core.report import format_report

    site = {"line": 42, "func": "book_list", "template": "books/list.html:7", "count": 100}
    report = {
        "version": 1,
        "session": {},
        "requests": [],
        "endpoints": [],
        "duplicates": [],
        "similar": [
            {
                "count": 100,
                "requests": 1,
                "redundant": 99,
                "total_ms": 8.0,
                "alias": "default",
                "request_ids": [1],
                "normalized": "SELECT ?",
                "call_sites": [
                    {**site, "file": "/srv/shop/books/views.py"},
                    {**site, "file": "/srv/shop/authors/views.py", "line": 7},
                ],
            }
        ],
        "suggestions": [],
    }
    text = format_report(report)
    assert "relative to /srv/shop" in text
    assert "at books/views.py:42 in book_list, template books/list.html:7 (100x)" in text
    assert "at authors/views.py:7" in text
