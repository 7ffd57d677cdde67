"""End to end: runserver + probe -> djangoscope record -> session file -> report."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
from django.test.utils import CaptureQueriesContext

from djangoscope.app.core.store import SessionStore

from .conftest import get

pytestmark = pytest.mark.e2e

PAGES = ["/books/", "/books/fixed/", "/books/tags/", "/authors/", "/raw/", "/api/books/"]
TABLE = re.compile(r'(?:FROM|INTO|UPDATE)\s+"?(\w+)"?', re.IGNORECASE)


MANY = re.compile(r"^\d+ times: ")


def shape(sql: str) -> tuple[str, str | None]:
    """What a query does and to which table: comparable across raw SQL and interpolated SQL.

    Django logs ``executemany`` as "N times: SQL"; the probe keeps the SQL and the batch size.
    """
    sql = MANY.sub("", sql)
    match = TABLE.search(sql)
    return sql.split(None, 1)[0].upper(), match.group(1) if match else None


@pytest.fixture
def in_process_queries(transactional_db):
    """The queries Django itself runs for a page, from CaptureQueriesContext, in-process."""
    from django.db import connection
    from django.test import Client

    from djangoscope.resources.demo.bookshop.seed import seed

    seed()
    client = Client()

    def run(path: str) -> list[tuple[str, str | None]]:
        with CaptureQueriesContext(connection) as ctx:
            client.get(path)
        return [shape(q["sql"]) for q in ctx.captured_queries]

    return run


def requests_by_path(store: SessionStore) -> dict[str, list[dict]]:
    by_path: dict[str, list[dict]] = {}
    for request in store.iter_requests():
        by_path.setdefault(request["path"], []).append(request)
    return by_path


def test_session_holds_exactly_the_queries_django_ran(
    tmp_path, start_record, start_server, in_process_queries
):
    out = tmp_path / "session.djscope"
    record = start_record(out)
    server = start_server(record.address)
    record.wait_for("+ connected")
    for path in PAGES:
        status, _ = get(server.base + path)
        assert status == 200, path
        record.wait_for(f" {path} ")
    assert record.stop() == 0
    assert "saved to" in record.output
    with SessionStore.open(out) as store:
        by_path = requests_by_path(store)
        for path in PAGES:
            (request,) = by_path[path]
            captured = [shape(q["sql"]) for q in store.queries(request["id"])]
            assert captured == in_process_queries(path), path
            assert request["query_count"] == len(captured)


def test_spans_cache_events_and_exceptions(tmp_path, start_record, start_server):
    out = tmp_path / "session.djscope"
    record = start_record(out)
    server = start_server(record.address)
    record.wait_for("+ connected")
    get(server.base + "/stats/fixed/")  # the first may hit or miss: the cache is per process
    for path in ("/stats/fixed/", "/books/", "/error/"):
        get(server.base + path)
    record.wait_for("/error/")
    record.stop()
    with SessionStore.open(out) as store:
        by_path = requests_by_path(store)
        cached = by_path["/stats/fixed/"][-1]
        events = store.cache_events(cached["id"])
        assert [e["op"] for e in events] == ["get_or_set"]
        assert events[0]["hit"] in (True, 1)
        assert cached["query_count"] == 0

        books = by_path["/books/"][0]
        spans = store.spans(books["id"])
        kinds = [s["kind"] for s in spans]
        assert kinds[0] == "request" and "view" in kinds and "template" in kinds
        assert kinds.count("sql") == books["query_count"] == 101
        by_id = {s["span_id"] if "span_id" in s else s["id"]: s for s in spans}
        for span in spans[1:]:
            parent = by_id[span["parent"]]
            assert parent["start_ns"] <= span["start_ns"]
        starts = [s["start_ns"] for s in spans if s["kind"] == "sql"]
        assert starts == sorted(starts)

        error = by_path["/error/"][0]
        assert error["status"] == 500
        assert error["exception_type"]


def test_report_command_reads_the_session(tmp_path, start_record, start_server):
    out = tmp_path / "session.djscope"
    record = start_record(out, "--requests", "4")
    server = start_server(record.address)
    for path in ("/books/", "/books/", "/books/fixed/"):
        get(server.base + path)
    record.process.wait(30)
    assert "recorded 4 requests" in record.wait_for("saved to")
    result = subprocess.run(
        [sys.executable, "-m", "djangoscope.app.cli", "report", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["version"] == 1
    paths = [r["path"] for r in report["requests"] if r["path"] != "/"]  # "/": readiness check
    assert paths == ["/books/", "/books/", "/books/fixed/"]
    assert {e["route"] for e in report["endpoints"]} >= {"books/", "books/fixed/"}
    assert report["similar"], "the N+1 page repeats one normalized query 100 times"
    text = subprocess.run(
        [sys.executable, "-m", "djangoscope.app.cli", "report", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert text.returncode == 0 and "/books/" in text.stdout


def test_concurrent_requests_on_threaded_runserver_stay_apart(tmp_path, start_record, start_server):
    from concurrent.futures import ThreadPoolExecutor

    from djangoscope.resources.demo.pages import PAGES

    expected = {p["path"]: p["queries"] for p in PAGES}
    expected.update({p["fixed"]: p["fixed_queries"] for p in PAGES if p["fixed"]})
    paths = ["/books/", "/authors/", "/books/fixed/", "/api/books/", "/many/fixed/"] * 4
    out = tmp_path / "session.djscope"
    record = start_record(out)
    server = start_server(record.address)
    record.wait_for("+ connected")
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda p: get(server.base + p)[0], paths))
    assert statuses == [200] * len(paths)
    deadline = time.monotonic() + 20
    while sum(record.output.count(f" {p} ") for p in set(paths)) < len(paths):
        assert time.monotonic() < deadline, record.output
        time.sleep(0.05)
    record.stop()
    with SessionStore.open(out) as store:
        requests = [r for r in store.iter_requests() if r["path"] != "/"]
        threads = {store.request(r["id"]).get("thread_id") for r in requests}
    assert len(requests) == len(paths)
    for request in requests:
        assert request["query_count"] == expected[request["path"]], request["path"]
    assert len(threads) > 1, "runserver is threaded: requests ran on several threads"
