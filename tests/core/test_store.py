"""SessionStore: round trips, summaries, dedupe, retention and every error a user can meet."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from djangoscope.app.core import fingerprint
from djangoscope.app.core.store import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    SessionError,
    SessionStore,
)


def count(store: SessionStore, table: str) -> int:
    return store.connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# -- round trip --------------------------------------------------------------------------------


def test_unit_round_trips_with_summary_columns(store, process_id, make_unit):
    message = make_unit(5, duration_ms=12.5, query_ms=2.0, cache_hits=2, cache_misses=1)
    request_id = store.add_unit(process_id, message)

    row = store.request(request_id)
    assert row["process_id"] == process_id
    assert row["unit_id"] == message["id"]
    assert (row["method"], row["path"], row["route"]) == ("GET", "/books/", "books/")
    assert row["view"] == "shop.views.book_list"
    assert row["status"] == 200
    assert row["started_at"] == message["started_at"]
    assert row["duration_ms"] == pytest.approx(12.5)
    assert row["cpu_ms"] == pytest.approx(6.25)
    assert row["query_count"] == 6
    assert row["db_ms"] == pytest.approx(12.0)
    assert row["duplicate_query_count"] == 0  # every author lookup has its own id
    assert row["similar_query_count"] == 4  # ...but the same shape: an N+1
    assert (row["cache_calls"], row["cache_hits"], row["cache_misses"]) == (3, 2, 1)
    assert row["template_count"] == 1
    assert row["request_bytes"] == 0 and row["response_bytes"] == 5120
    assert row["exception_type"] is None
    assert row["instances"] == {"bookshop.Book": 5}
    assert row["instance_count"] == 5
    assert row["invalid_records"] == 0

    queries = store.queries(request_id)
    assert [q["idx"] for q in queries] == list(range(6))
    assert [q["params"] for q in queries] == [[], [1], [2], [3], [4], [5]]
    sent = message["queries"][1]
    author = queries[1]
    assert author["sql"] == sent["sql"]
    assert author["duration_ns"] == sent["duration_ns"]
    assert author["template_name"] == "books/list.html" and author["template_line"] == 7
    assert author["orm"] == sent["orm"]
    assert (author["orm_op"], author["orm_model"], author["orm_field"]) == (
        "forward_fk",
        "bookshop.Book",
        "author",
    )
    assert author["fingerprint"] == fingerprint.fingerprint(sent["sql"])
    assert author["normalized"] == fingerprint.normalize(sent["sql"])
    assert author["operation"] == "SELECT"
    assert author["duplicate_of"] is None

    stack = store.stack(author["stack_id"])
    assert stack["frames"] == message["stacks"]["s0"]
    assert (stack["call_file"], stack["call_line"], stack["call_func"]) == (
        "shop/views.py",
        42,
        "book_list",
    )

    spans = store.spans(request_id)
    assert len(spans) == len(message["spans"])
    assert spans[0]["kind"] == "request" and spans[0]["parent"] is None
    sql_spans = [s for s in spans if s["kind"] == "sql"]
    assert [s["ref"] for s in sql_spans] == list(range(6))
    assert all(s["parent"] in (1, 2) for s in sql_spans)

    events = store.cache_events(request_id)
    assert [e["hit"] for e in events] == [1, 1, 0]
    assert events[0]["keys"] == ["book:0"]
    assert events[0]["op"] == "get"


def test_processes_keep_the_handshake_identity(store, make_unit):
    identity = {"project": "shop", "pid": 7, "argv": ["manage.py", "runserver"], "extra": 1}
    first = store.add_process(identity, "c-1")
    second = store.add_process({"project": "shop", "pid": 8}, "c-2")
    store.set_process_stats(first, {"sent": 3, "dropped": 1})
    store.end_process(second)
    rows = store.processes()
    assert [r["id"] for r in rows] == [first, second]
    assert rows[0]["connection"] == "c-1" and rows[0]["pid"] == 7
    assert rows[0]["argv"] == ["manage.py", "runserver"]
    assert rows[0]["identity"]["extra"] == 1
    assert rows[0]["stats"] == {"sent": 3, "dropped": 1}
    assert rows[1]["disconnected_at"] is not None


def test_exact_duplicates_are_counted_beyond_the_first(store, process_id, make_unit):
    request_id = store.add_unit(process_id, make_unit(4, same_params=True))
    row = store.request(request_id)
    assert row["duplicate_query_count"] == 3
    assert row["similar_query_count"] == 3
    assert [q["duplicate_of"] for q in store.queries(request_id)] == [None, None, 1, 1, 1]


def test_duplicates_need_same_alias_and_params(store, process_id, make_unit):
    message = make_unit(2, same_params=True)
    message["queries"][2]["alias"] = "other"
    assert store.request(store.add_unit(process_id, message))["duplicate_query_count"] == 0


def test_transaction_statements_are_neither_duplicates_nor_similar(store, process_id, make_unit):
    message = make_unit(1)
    for sql in ('SAVEPOINT "s1_x1"', 'RELEASE SAVEPOINT "s1_x1"') * 3:
        message["queries"].append(dict(message["queries"][0], sql=sql, params=None))
    row = store.request(store.add_unit(process_id, message))
    assert row["query_count"] == 8
    assert row["duplicate_query_count"] == 0
    assert row["similar_query_count"] == 0


def test_stacks_are_deduplicated_by_content_across_requests(store, process_id, make_unit):
    # Each message numbers its stacks from s0; the same frames must map to one row anyway.
    store.add_unit(process_id, make_unit(3, stack_ref="s0"))
    store.add_unit(process_id, make_unit(3, stack_ref="s7"))
    assert count(store, "stacks") == 2  # the template stack and the view stack
    store.add_unit(process_id, make_unit(3, view_line=99))
    assert count(store, "stacks") == 4
    ids = {q["stack_id"] for r in store.iter_requests() for q in store.queries(r["id"])}
    assert len(ids) == 4


def test_append_to_an_existing_session(session_path, make_unit):
    with SessionStore.create(session_path) as store:
        pid = store.add_process({"pid": 1}, "a")
        store.add_unit(pid, make_unit(2))
        created = store.meta()["created_at"]
    with SessionStore.create(session_path) as store:
        assert store.meta()["created_at"] == created
        pid2 = store.add_process({"pid": 2}, "b")
        assert pid2 != pid
        store.add_unit(pid, make_unit(2))  # a process of the earlier run is still known
        store.add_unit(pid2, make_unit(2))
        assert store.request_count() == 3
        # Stacks of the first run are reused, not duplicated, after reopening.
        assert count(store, "stacks") == 2


def test_reader_sees_a_live_writer(session_path, make_unit):
    with SessionStore.create(session_path) as writer:
        pid = writer.add_process({"pid": 1}, "a")
        writer.add_unit(pid, make_unit(1))
        with SessionStore.open(session_path) as reader:
            assert reader.request_count() == 1
            last = writer.add_unit(pid, make_unit(1))
            assert [r["id"] for r in reader.iter_requests(after_id=1)] == [last]
            with pytest.raises(SessionError, match="read-only") as info:
                reader.add_unit(None, make_unit(1))
            assert info.value.kind == "readonly"


def test_iter_requests_pages_and_limits(store, process_id, make_unit):
    ids = [store.add_unit(process_id, make_unit(0)) for _ in range(7)]
    assert [r["id"] for r in store.iter_requests()] == ids
    assert [r["id"] for r in store.iter_requests(limit=3)] == ids[:3]
    assert [r["id"] for r in store.iter_requests(after_id=ids[4])] == ids[5:]
    assert store.request(10_000) is None
    assert store.stack(10_000) is None
    assert store.queries(10_000) == []


def test_many_requests_iterate_across_batches(store, process_id, make_unit):
    for _ in range(1100):
        store.add_unit(process_id, make_unit(0, cache_hits=0, cache_misses=0))
    assert sum(1 for _ in store.iter_requests()) == 1100
    assert sum(1 for _ in store.iter_all_queries()) == 1100


def test_threads_can_share_one_store(store, process_id, make_unit):
    errors = []

    def work():
        try:
            for _ in range(20):
                store.add_unit(process_id, make_unit(2))
                list(store.iter_requests())
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.request_count() == 80
    assert count(store, "queries") == 80 * 3


# -- untrusted input ---------------------------------------------------------------------------


def test_malformed_message_is_stored_with_defaults(store, process_id):
    message = {
        "kind": 5,
        "id": ["x"],
        "pid": 2**70,
        "async": "yes",
        "started_at": "yesterday",
        "duration_ns": float("nan"),
        "cpu_ns": True,
        "request": "GET /",
        "response": {"status": "200", "bytes": -1, "streaming": "no"},
        "exception": "boom",
        "spans": [{"id": "a", "kind": None}, 3, {"id": 1, "parent": 0, "kind": "sql"}],
        "queries": [
            1,
            "SELECT 1",
            {"sql": 5, "params": {"a": float("nan"), "b": b"x"}, "duration_ns": "x"},
            {"sql": "SELECT \ud800 FROM t", "stack": "missing", "template": "x", "orm": []},
            {"sql": "SELECT 1", "stack": "s0", "duration_ns": 2_000_000, "error": {"x": 1}},
        ],
        "cache": "nope",
        "stacks": {"s0": "bad", "s1": [1, {"file": 3}]},
        "instances": {"shop.Book": "x", "shop.Author": 2, "": 1.5},
        "truncated": {"queries": 5, "bad": "x"},
    }
    request_id = store.add_unit(process_id, message)
    row = store.request(request_id)
    assert row["kind"] == "5"  # a number is still meaningful text
    assert row["unit_id"] is None
    assert row["pid"] is None
    assert row["is_async"] == 0
    assert row["started_at"] is None and row["duration_ms"] is None and row["cpu_ms"] is None
    assert (row["method"], row["path"], row["route"]) == ("", "", "")
    assert row["status"] is None and row["response_bytes"] == -1
    assert row["exception_type"] is None
    assert row["query_count"] == 3
    assert row["db_ms"] == pytest.approx(2.0)
    assert row["cache_calls"] == 0
    assert row["invalid_records"] == 3  # two queries and one span were not objects
    assert row["truncated"] == {"queries": 5}
    assert row["instances"] == {"": 1, "shop.Author": 2}
    queries = store.queries(request_id)
    assert queries[0]["sql"] == "5"
    assert queries[0]["params"] == {"a": "nan", "b": "b'x'"}
    assert queries[0]["duration_ns"] is None
    assert "\ufffd" in queries[1]["sql"]  # lone surrogate replaced, not a crash
    assert queries[1]["stack_id"] is None and queries[1]["template_name"] is None
    assert queries[2]["stack_id"] is None  # "bad" frames: nothing to store
    assert queries[2]["error"] == '{"x":1}'
    spans = store.spans(request_id)
    assert [s["span_id"] for s in spans] == [0, 1]


@pytest.mark.parametrize(
    "message",
    [
        {},
        {"queries": None, "spans": {}, "stacks": [], "request": None, "response": None},
        {"queries": [{}], "cache": [{}], "spans": [{}], "instances": {}},
        {"cache": [{"hits": 3, "misses": "2", "hit": True}, {"hit": None, "op": "set"}]},
    ],
)
def test_sparse_messages_do_not_crash(store, process_id, message):
    row = store.request(store.add_unit(process_id, message))
    assert row["kind"] == "http"
    assert row["query_count"] == len(message.get("queries") or [])


def test_get_many_counts_hits_and_misses(store, process_id):
    message = {"cache": [{"op": "get_many", "hits": 3, "misses": 2, "hit": None}, {"hit": False}]}
    row = store.request(store.add_unit(process_id, message))
    assert (row["cache_hits"], row["cache_misses"]) == (3, 3)


def test_non_object_message_and_unknown_process_are_refused(store, process_id):
    with pytest.raises(SessionError, match="must be a JSON object") as info:
        store.add_unit(process_id, ["not", "a", "dict"])  # type: ignore[arg-type]
    assert info.value.kind == "invalid"
    with pytest.raises(SessionError, match="unknown process id 99"):
        store.add_unit(99, {})
    assert store.add_unit(None, {}) > 0  # units of an unknown origin are allowed


# -- opening errors ----------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(SessionError, match="no such session file") as info:
        SessionStore.open(tmp_path / "nope.djscope")
    assert info.value.kind == "missing"
    assert not (tmp_path / "nope.djscope").exists()


def test_missing_folder_on_create(tmp_path):
    with pytest.raises(SessionError, match="does not exist"):
        SessionStore.create(tmp_path / "no" / "such" / "s.djscope")


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.djscope"
    path.write_bytes(b"\x00\x01 this is not a database" * 100)
    for opener in (SessionStore.open, SessionStore.create):
        with pytest.raises(SessionError, match="not an SQLite database") as info:
            opener(path)
        assert info.value.kind == "not-sqlite"
        assert "\n" not in str(info.value)
    assert path.read_bytes().startswith(b"\x00\x01 this")  # never overwritten


def test_empty_file_is_not_a_session_but_can_become_one(tmp_path, make_unit):
    path = tmp_path / "empty.djscope"
    path.touch()
    with pytest.raises(SessionError, match="empty file"):
        SessionStore.open(path)
    with SessionStore.create(path) as store:
        store.add_unit(None, make_unit(1))
    with SessionStore.open(path) as store:
        assert store.request_count() == 1


def test_plain_sqlite_database_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "app.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.execute("INSERT INTO users VALUES ('ada')")
    conn.close()
    for opener in (SessionStore.open, SessionStore.create):
        with pytest.raises(SessionError, match="not a djangoscope session") as info:
            opener(path)
        assert info.value.kind == "not-session"
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM users").fetchall() == [("ada",)]
        assert conn.execute("PRAGMA application_id").fetchone()[0] == 0
    conn.close()


def test_session_from_a_newer_schema(session_path):
    SessionStore.create(session_path).close()
    with sqlite3.connect(session_path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    expected = (
        f"written by a newer djangoscope (schema {SCHEMA_VERSION + 1} > {SCHEMA_VERSION}); "
        "upgrade djangoscope"
    )
    for opener in (SessionStore.open, SessionStore.create):
        with pytest.raises(SessionError) as info:
            opener(session_path)
        assert expected in str(info.value)
        assert info.value.kind == "newer"


def test_corrupt_session(session_path, make_unit):
    with SessionStore.create(session_path) as store:
        for _ in range(30):
            store.add_unit(None, make_unit(10))
    data = bytearray(session_path.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    data[2 * page : len(data)] = b"\xa5" * (len(data) - 2 * page)  # every page past the 2nd
    session_path.write_bytes(bytes(data))
    with pytest.raises(SessionError) as info, SessionStore.open(session_path) as store:
        list(store.iter_requests())
        [store.queries(r) for r in range(1, 31)]
    assert info.value.kind == "corrupt"
    assert "is corrupt" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_session_is_recognised_by_its_application_id(session_path):
    SessionStore.create(session_path).close()
    with sqlite3.connect(session_path) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_closed_store_says_so(session_path):
    store = SessionStore.create(session_path)
    store.close()
    store.close()  # idempotent
    with pytest.raises(SessionError, match="closed"):
        store.request_count()


# -- full disk ---------------------------------------------------------------------------------


def test_full_disk_keeps_what_was_stored_and_says_so(session_path, make_unit):
    store = SessionStore.create(session_path)
    pid = store.add_process({"pid": 1}, "a")
    kept = [store.add_unit(pid, make_unit(5)) for _ in range(3)]
    before = [store.queries(i) for i in kept]
    pages = store.connection.execute("PRAGMA page_count").fetchone()[0]
    store.connection.execute(f"PRAGMA max_page_count = {pages + 2}")

    big = make_unit(300, sql="SELECT " + ", ".join(f'"c{i}"' for i in range(200)) + " FROM t")
    with pytest.raises(SessionError) as info:
        for _ in range(50):
            store.add_unit(pid, big)
    error = info.value
    assert error.kind == "full"
    assert "disk is full" in str(error) and str(session_path) in str(error)
    assert "\n" not in str(error)

    # Nothing half-written: the failed unit left no rows behind, earlier ones are intact.
    ids = [r["id"] for r in store.iter_requests()]
    assert ids[:3] == kept
    assert count(store, "queries") == sum(r["query_count"] for r in store.iter_requests())
    assert [store.queries(i) for i in kept] == before

    # Still usable for reads, and writes resume once there is room again.
    store.connection.execute("PRAGMA max_page_count = 1073741823")
    store.add_unit(pid, make_unit(1))
    store.close()
    with SessionStore.open(session_path) as reopened:
        assert reopened.request_count() == len(ids) + 1
        assert [reopened.queries(i) for i in kept] == before


def test_a_unit_that_fails_midway_leaves_nothing_behind(store, process_id, make_unit):
    store.add_unit(process_id, make_unit(2))
    before = {t: count(store, t) for t in ("requests", "queries", "spans", "stacks")}
    store.connection.execute(
        "CREATE TRIGGER fail BEFORE INSERT ON cache_events BEGIN SELECT RAISE(ABORT, 'boom'); END"
    )
    # A new call stack: its row is written inside the failing transaction.
    with pytest.raises(SessionError, match="boom"):
        store.add_unit(process_id, make_unit(2, view_line=500))
    assert {t: count(store, t) for t in before} == before
    store.connection.execute("DROP TRIGGER fail")
    # The rolled-back stack row must not linger in the store's cache.
    request_id = store.add_unit(process_id, make_unit(2, view_line=500))
    stack_id = store.queries(request_id)[1]["stack_id"]
    assert store.stack(stack_id)["call_line"] == 500


# -- size cap ----------------------------------------------------------------------------------


def test_size_cap_prunes_oldest_requests(session_path, make_unit):
    cap = 400_000
    with SessionStore.create(session_path, max_bytes=cap) as store:
        pid = store.add_process({"pid": 1}, "a")
        ids = []
        for i in range(150):
            ids.append(store.add_unit(pid, make_unit(20, view_line=40 + i % 3)))
            assert store.size_bytes() <= cap
        remaining = [r["id"] for r in store.iter_requests()]
        pruned = int(store.meta()["pruned_requests"])
        assert 1 < len(remaining) < 150
        assert pruned == 150 - len(remaining)
        assert remaining == ids[pruned:]  # the newest survive, in order
        assert store.meta()["pruned_through_id"] == str(ids[pruned - 1])
        conn = store.connection
        for table in ("queries", "spans", "cache_events", "instances"):
            orphans = conn.execute(
                f"SELECT count(*) FROM {table} WHERE request_id NOT IN (SELECT id FROM requests)"
            ).fetchone()[0]
            assert orphans == 0, table
        unused = conn.execute(
            "SELECT count(*) FROM stacks WHERE id NOT IN (SELECT stack_id FROM queries "
            "WHERE stack_id IS NOT NULL UNION SELECT stack_id FROM cache_events "
            "WHERE stack_id IS NOT NULL)"
        ).fetchone()[0]
        assert unused == 0
        last = store.queries(remaining[-1])
        assert len(last) == 21 and store.stack(last[1]["stack_id"]) is not None
    # Freed pages go back to the disk: the file itself respects the cap.
    assert session_path.stat().st_size <= cap
    # The cap is remembered by the file.
    with SessionStore.create(session_path) as store:
        assert store.max_bytes == cap
    with SessionStore.create(session_path, max_bytes=0) as store:
        assert store.max_bytes is None


def test_the_newest_request_survives_a_tiny_cap(session_path, make_unit):
    with SessionStore.create(session_path, max_bytes=1) as store:
        # Line 1's stacks are pruned with the first request, then needed again by the third.
        for line in (1, 2, 1):
            last = store.add_unit(None, make_unit(3, view_line=line))
        assert [r["id"] for r in store.iter_requests()] == [last]
        assert store.meta()["pruned_requests"] == "2"
        (stack_id,) = {q["stack_id"] for q in store.queries(last)[1:]}
        assert store.stack(stack_id)["call_line"] == 1
        assert count(store, "stacks") == 2


def test_no_cap_means_no_pruning(store, make_unit):
    for _ in range(5):
        store.add_unit(None, make_unit(3))
    assert store.prune() == 0
    assert store.request_count() == 5
    assert store.prune(max_bytes=1) == 4
    assert store.request_count() == 1
