"""SQL capture on real SQLite connections: ORM, raw cursors, executemany, transactions, threads,
async paths, and the probe never breaking or hiding a database error."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import IntegrityError, connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from djangoscope.probe import capture, recorder, stacks
from djangoscope.probe.capture import sql as sql_capture
from djangoscope.probe.recorder import Unit, current_unit
from djangoscope.resources.demo.bookshop.models import Author, Book, Tag

pytestmark = pytest.mark.usefixtures("installed")

TRANSACTION_STATEMENTS = {"BEGIN", "COMMIT", "ROLLBACK"}


def transaction_spans(unit: Unit) -> list[str]:
    return [s.name for s in unit.spans if s.kind == recorder.SPAN_TRANSACTION]


@pytest.mark.django_db
def test_nothing_is_recorded_outside_a_unit(recording):
    other = Unit()  # exists, but is not current
    Author.objects.create(name="A", email="a@example.com")
    list(Author.objects.all())
    assert other.queries == []
    with recording() as unit:
        list(Author.objects.all())
    list(Author.objects.all())
    assert len(unit.queries) == 1


@pytest.mark.django_db
def test_query_count_and_order_match_django(recording, books):
    with CaptureQueriesContext(connection) as django_queries, recording() as unit:
        list(Book.objects.filter(pages__gt=50))
        Book.objects.count()
        Author.objects.filter(name="Ann").exists()
        for book in Book.objects.all():
            _ = book.author.name
    assert len(unit.queries) == len(django_queries.captured_queries) == 7
    for ours, theirs in zip(unit.queries, django_queries.captured_queries, strict=True):
        assert ours["sql"].split()[0] == theirs["sql"].split()[0]
        assert ours["alias"] == "default"
        assert ours["vendor"] == "sqlite"
        assert ours["end_ns"] >= ours["start_ns"]
        assert ours["error"] is None
    first = unit.queries[0]
    assert "%s" in first["sql"]  # placeholders, not interpolated values
    assert first["params"] == (50,)
    # Each query is also a leaf span of kind "sql" pointing back at its record.
    sql_spans = [s for s in unit.spans if s.kind == recorder.SPAN_SQL]
    assert [s.ref for s in sql_spans] == list(range(7))


@pytest.mark.django_db
def test_raw_cursor_execute_params_and_rowcount(recording, books):
    with recording() as unit, connection.cursor() as cursor:
        cursor.execute("SELECT %s + %s", [2, 3])
        assert cursor.fetchone() == (5,)
        cursor.execute("UPDATE bookshop_book SET pages = pages + %s WHERE pages > %s", (1, 0))
        cursor.execute("SELECT 1")
    select, update, bare = unit.queries
    assert select["sql"] == "SELECT %s + %s"
    assert select["params"] == (2, 3)
    assert select["many"] is False
    assert select["rowcount"] is None  # sqlite reports -1 for SELECT
    assert update["rowcount"] == 3
    assert update["params"] == (1, 0)
    assert bare["params"] is None


@pytest.mark.django_db
def test_params_are_a_snapshot_not_the_callers_list(recording):
    params = ["x"]
    with recording() as unit, connection.cursor() as cursor:
        cursor.execute("SELECT %s", params)
        params.append("later")
    assert unit.queries[0]["params"] == ("x",)


@pytest.mark.django_db
def test_executemany_with_a_list(recording):
    rows = [(f"tag{i}",) for i in range(5)]
    with recording() as unit, connection.cursor() as cursor:
        cursor.executemany("INSERT INTO bookshop_tag (name) VALUES (%s)", rows)
    (query,) = unit.queries
    assert query["many"] is True
    assert query["batch"] == 5
    assert query["params"] == [("tag0",), ("tag1",), ("tag2",)]
    assert query["rowcount"] == 5
    assert Tag.objects.count() == 5


@pytest.mark.django_db
def test_executemany_with_a_generator_is_not_consumed_by_the_probe(recording):
    pulled = []

    def rows():
        for i in range(10):
            pulled.append(i)
            yield (f"gen{i}",)

    source = rows()
    with recording() as unit, connection.cursor() as cursor:
        cursor.executemany("INSERT INTO bookshop_tag (name) VALUES (%s)", source)
    assert pulled == list(range(10))  # every row pulled exactly once, by the driver
    assert next(source, None) is None
    assert Tag.objects.filter(name__startswith="gen").count() == 10
    (query,) = unit.queries
    assert query["many"] is True
    assert query["batch"] == 10
    assert query["params"] == [("gen0",), ("gen1",), ("gen2",)]


@pytest.mark.django_db(transaction=True)
def test_atomic_savepoints_and_transaction_spans(recording):
    with recording() as unit:
        Author.objects.create(name="outside", email="o@example.com")
        with transaction.atomic():
            Author.objects.create(name="outer", email="a@example.com")
            with transaction.atomic():
                Author.objects.create(name="inner", email="b@example.com")
            try:
                with transaction.atomic():
                    Author.objects.create(name="doomed", email="c@example.com")
                    raise RuntimeError("roll this savepoint back")
            except RuntimeError:
                pass
    sql = [q["sql"] for q in unit.queries]
    by_kind = [s.split()[0] for s in sql]
    assert by_kind == [
        "INSERT",  # autocommit
        "BEGIN",  # sqlite's atomic() issues a real BEGIN through the cursor
        "INSERT",
        "SAVEPOINT",
        "INSERT",
        "RELEASE",
        "SAVEPOINT",
        "INSERT",
        "ROLLBACK",  # ROLLBACK TO SAVEPOINT
        "RELEASE",
        "COMMIT",  # not run through a cursor, but logged by Django: recorded as a query too
    ]
    atomic = [q["atomic"] for q in unit.queries]
    # BEGIN runs just before the flag is set; COMMIT runs after atomic() has exited.
    assert atomic == [False, False] + [True] * 8 + [False]
    depth = [q["savepoint_depth"] for q in unit.queries]
    # A SAVEPOINT runs before its id is pushed, RELEASE/ROLLBACK TO after it is popped.
    assert depth == [0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0]
    assert unit.queries[-1]["orm"] == {"op": "transaction", "statement": "COMMIT"}
    assert transaction_spans(unit) == ["BEGIN default", "COMMIT default"]
    begin_span = next(s for s in unit.spans if s.name == "BEGIN default")
    begin_query_span = next(s for s in unit.spans if s.kind == "sql" and s.ref == 1)
    assert begin_query_span.parent == begin_span.id
    assert Author.objects.filter(name="doomed").exists() is False


@pytest.mark.django_db(transaction=True)
def test_rollback_is_a_transaction_span_and_query_counts_match_django(recording):
    with CaptureQueriesContext(connection) as django_queries, recording() as unit:
        try:
            with transaction.atomic():
                Author.objects.create(name="gone", email="g@example.com")
                raise ValueError
        except ValueError:
            pass
    assert transaction_spans(unit) == ["BEGIN default", "ROLLBACK default"]
    # Django 4.2+ logs COMMIT/ROLLBACK in connection.queries; so do we, one for one.
    captured = [q["sql"].split()[0] for q in django_queries.captured_queries]
    ours = [q["sql"].split()[0] for q in unit.queries]
    assert ours == captured == ["BEGIN", "INSERT", "ROLLBACK"]


@pytest.mark.django_db(transaction=True)
def test_explicit_commit_and_rollback(recording):
    with CaptureQueriesContext(connection) as django_queries, recording() as unit:
        transaction.set_autocommit(False)
        try:
            Author.objects.create(name="kept", email="k@example.com")
            transaction.commit()
            Author.objects.create(name="dropped", email="d@example.com")
            transaction.rollback()
        finally:
            transaction.set_autocommit(True)
    assert transaction_spans(unit) == ["BEGIN default", "COMMIT default", "ROLLBACK default"]
    ours = [q["sql"].split()[0] for q in unit.queries]
    assert ours == [q["sql"].split()[0] for q in django_queries.captured_queries]
    assert ours == ["BEGIN", "INSERT", "COMMIT", "INSERT", "ROLLBACK"]
    assert list(Author.objects.values_list("name", flat=True)) == ["kept"]


@pytest.mark.django_db(databases=["default", "other"])
def test_both_aliases_are_captured(recording):
    with recording() as unit:
        Author.objects.using("other").create(name="Other", email="o@example.com")
        list(Author.objects.using("other").all())
        list(Author.objects.all())
    assert [q["alias"] for q in unit.queries] == ["other", "other", "default"]
    assert sql_capture.execute_wrapper in connections["other"].execute_wrappers


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_connection_created_after_install_in_a_new_thread(recording):
    seen = {}

    def work() -> None:
        try:
            for alias in ("default", "other"):
                conn = connections[alias]  # created now, in this thread
                seen[alias] = sql_capture.execute_wrapper in conn.execute_wrappers
                with conn.cursor() as cursor:
                    cursor.execute("SELECT %s", [alias])
        finally:
            connections.close_all()

    with recording() as unit:
        ctx = contextvars.copy_context()  # threads do not inherit context: hand it over
        thread = threading.Thread(target=ctx.run, args=(work,))
        thread.start()
        thread.join()
    assert seen == {"default": True, "other": True}
    assert [(q["alias"], q["params"]) for q in unit.queries] == [
        ("default", ("default",)),
        ("other", ("other",)),
    ]


@pytest.mark.django_db
def test_user_execute_wrapper_keeps_ours(recording):
    calls = []

    def theirs(execute, sql, params, many, context):
        calls.append(sql)
        return execute(sql, params, many, context)

    sql_capture.detach(connection)  # as if this connection predates install()
    with connection.execute_wrapper(theirs):
        capture.ensure_installed()  # a request starting inside a user's wrapper block
        with recording() as unit:
            list(Author.objects.all())
    assert calls and len(unit.queries) == 1
    assert connection.execute_wrappers[0] is sql_capture.execute_wrapper
    with recording() as unit:
        list(Author.objects.all())
    assert len(unit.queries) == 1


@pytest.mark.django_db(transaction=True)
def test_database_errors_pass_through_unchanged_and_are_recorded(recording):
    Author.objects.create(id=1, name="A", email="a@example.com")
    with recording() as unit, pytest.raises(IntegrityError):
        Author.objects.create(id=1, name="dup", email="d@example.com")
    (query,) = unit.queries
    assert query["error"] == "IntegrityError"
    assert query["rowcount"] is None


@pytest.mark.django_db
def test_a_broken_probe_never_breaks_the_query(recording, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("probe bug")

    monkeypatch.setattr(sql_capture, "_capture", boom)
    before = capture.errors.get("sql", 0)
    with recording() as unit:
        assert Author.objects.count() == 0
    assert unit.queries == []
    assert capture.errors["sql"] == before + 1


@pytest.mark.django_db
def test_install_is_idempotent_and_uninstall_removes_hooks(recording):
    capture.install()
    capture.install()
    assert connection.execute_wrappers.count(sql_capture.execute_wrapper) == 1
    capture.uninstall()
    try:
        assert sql_capture.execute_wrapper not in connection.execute_wrappers
        with recording() as unit:
            list(Author.objects.all())
        assert unit.queries == []  # uninstalled: nothing records
    finally:
        capture.install()
    with recording() as unit:
        list(Author.objects.all())
    assert len(unit.queries) == 1


def test_install_from_many_threads_at_once():
    capture.uninstall()
    errors = []

    def go() -> None:
        try:
            capture.install()
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.utils import ConnectionHandler

    assert ConnectionHandler.create_connection.__djangoscope__
    assert BaseDatabaseWrapper.commit.__wrapped__.__name__ == "commit"
    assert not hasattr(BaseDatabaseWrapper.commit.__wrapped__, "__djangoscope__")


# -- async -------------------------------------------------------------------------------------


def _titles(prefix: str, n: int, start: int = 0) -> list[str]:
    for i in range(start, start + n):
        Tag.objects.create(name=f"{prefix}{i}")
    return list(Tag.objects.filter(name__startswith=prefix).values_list("name", flat=True))


@pytest.mark.django_db
def test_async_path_carries_the_unit_into_sync_to_async():
    async def view() -> list[str]:
        return await sync_to_async(_titles)("async", 2)

    with_unit = Unit()
    token = current_unit.set(with_unit)
    try:
        names = async_to_sync(view)()
    finally:
        current_unit.reset(token)
    assert names == ["async0", "async1"]
    assert [q["sql"].split()[0] for q in with_unit.queries] == ["INSERT", "INSERT", "SELECT"]


@pytest.mark.django_db
def test_concurrent_tasks_keep_their_own_units():
    async def request(prefix: str, n: int) -> Unit:
        unit = Unit()
        current_unit.set(unit)  # each task runs in its own copy of the context
        for i in range(n):
            await sync_to_async(_titles)(prefix, 1, i)
            await asyncio.sleep(0)
        return unit

    async def both() -> list[Unit]:
        return await asyncio.gather(request("a", 1), request("b", 3))

    first, second = async_to_sync(both)()
    assert current_unit.get() is None
    assert len(first.queries) == 2
    assert len(second.queries) == 6
    assert all("a" in q["params"][0] for q in first.queries)
    assert all("b" in q["params"][0] for q in second.queries)


@pytest.mark.django_db
def test_stack_key_resolves_to_this_test(recording):
    with recording() as unit:
        list(Author.objects.all())  # the call site
    frames = stacks.resolve(unit.queries[0]["stack"])
    app = [f for f in frames if f["app"]]
    assert app[-1]["file"] == __file__
    assert app[-1]["func"] == "test_stack_key_resolves_to_this_test"
