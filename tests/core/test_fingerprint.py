"""SQL normalization and fingerprints: what counts as "the same query"."""

from __future__ import annotations

import hashlib
import re
import time

import pytest

from djangoscope.app.core import fingerprint as fp
from djangoscope.app.core.fingerprint import fingerprint, normalize, operation, tables

ORM_SQL = (
    'SELECT "bookshop_book"."id", "bookshop_book"."title" FROM "bookshop_book" '
    'INNER JOIN "bookshop_author" ON ("bookshop_book"."author_id" = "bookshop_author"."id") '
    'WHERE ("bookshop_book"."published" AND "bookshop_book"."id" IN (%s, %s, %s)) '
    'ORDER BY "bookshop_book"."title" ASC LIMIT 21'
)


def test_orm_sql_keeps_identifiers_and_collapses_placeholders():
    assert normalize(ORM_SQL) == (
        'SELECT "bookshop_book"."id", "bookshop_book"."title" FROM "bookshop_book" '
        'INNER JOIN "bookshop_author" ON ("bookshop_book"."author_id" = "bookshop_author"."id") '
        'WHERE ("bookshop_book"."published" AND "bookshop_book"."id" IN (...)) '
        'ORDER BY "bookshop_book"."title" ASC LIMIT ?'
    )


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("select  *\n\tfrom books   where id = 42", "SELECT * FROM books WHERE id = ?"),
        ("SELECT * FROM t WHERE a = %s AND b = %(name)s", "SELECT * FROM t WHERE a = ? AND b = ?"),
        ("SELECT * FROM t WHERE a = $1 AND b = :name", "SELECT * FROM t WHERE a = ? AND b = ?"),
        ("SELECT x::int FROM t", "SELECT x::int FROM t"),
        ("SELECT * FROM t -- why\nWHERE /* hint */ a = 1;", "SELECT * FROM t WHERE a = ?"),
        ("SELECT * FROM t WHERE name = 'O''Brien'", "SELECT * FROM t WHERE name = ?"),
        ("SELECT 'a -- not a comment' FROM t", "SELECT ? FROM t"),
        ("SELECT 1.5e3, .5, 0x1F, -7 FROM t", "SELECT ?, ?, ?, - ? FROM t"),
        ('SELECT "t1"."c2", `t3`, t4.c5 FROM t1', 'SELECT "t1"."c2", `t3`, t4.c5 FROM t1'),
        ("SELECT * FROM t WHERE id in (1, 2, 3)", "SELECT * FROM t WHERE id IN (...)"),
        ("SELECT * FROM t WHERE id IN (%s)", "SELECT * FROM t WHERE id IN (...)"),
        (
            "SELECT * FROM t WHERE id IN (SELECT id FROM u)",
            "SELECT * FROM t WHERE id IN (SELECT id FROM u)",
        ),
        (
            'INSERT INTO "t" ("a", "b") VALUES (%s, %s), (%s, %s)',
            'INSERT INTO "t" ("a", "b") VALUES (...)',
        ),
        (
            'SELECT "t" FROM x WHERE "t" LIKE %s ESCAPE \'\\\'',
            'SELECT "t" FROM x WHERE "t" LIKE ? ESCAPE ?',
        ),
        ('SELECT COUNT(*) AS "__count" FROM "t"', 'SELECT COUNT(*) AS "__count" FROM "t"'),
    ],
)
def test_normalize(sql, expected):
    assert normalize(sql) == expected


def test_same_shape_same_fingerprint():
    variants = [
        ORM_SQL,
        ORM_SQL.replace("(%s, %s, %s)", "(%s)"),
        ORM_SQL.replace("(%s, %s, %s)", "(" + ", ".join(["%s"] * 500) + ")"),
        ORM_SQL.replace("LIMIT 21", "LIMIT 1"),
        "  " + ORM_SQL.replace(" ", "\n  ") + " ; ",
    ]
    assert len({fingerprint(v) for v in variants}) == 1
    assert fingerprint("SELECT * FROM t WHERE id = 1") == fingerprint("select * from t where id=2")


def test_different_shapes_differ():
    shapes = [
        "SELECT * FROM t WHERE id = %s",
        "SELECT * FROM u WHERE id = %s",
        "SELECT * FROM t WHERE pk = %s",
        'SELECT * FROM "t" WHERE id = %s',
        "DELETE FROM t WHERE id = %s",
    ]
    assert len({fingerprint(s) for s in shapes}) == len(shapes)


def test_fingerprint_is_a_short_stable_hash_of_the_normalized_text():
    digest = fingerprint("select 1")
    assert re.fullmatch(r"[0-9a-f]{16}", digest)
    assert digest == hashlib.sha1(b"SELECT ?").hexdigest()[:16]


@pytest.mark.parametrize(
    ("sql", "op"),
    [
        (ORM_SQL, "SELECT"),
        ("  (SELECT 1) UNION (SELECT 2)", "SELECT"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "SELECT"),
        ("WITH x AS (SELECT 1) DELETE FROM t WHERE id IN (SELECT * FROM x)", "DELETE"),
        ('INSERT INTO "t" ("a") VALUES (%s) RETURNING "t"."id"', "INSERT"),
        ('UPDATE "t" SET "a" = %s WHERE "t"."id" = %s', "UPDATE"),
        ('DELETE FROM "t" WHERE "t"."id" IN (%s)', "DELETE"),
        ('SAVEPOINT "s1_x1"', "SAVEPOINT"),
        ('RELEASE SAVEPOINT "s1_x1"', "RELEASE"),
        ('ROLLBACK TO SAVEPOINT "s1_x1"', "ROLLBACK"),
        ("ROLLBACK", "ROLLBACK"),
        ("BEGIN", "BEGIN"),
        ("START TRANSACTION", "BEGIN"),
        ("COMMIT", "COMMIT"),
        ("PRAGMA foreign_keys", "OTHER"),
        ('CREATE TABLE "t" ("id" integer)', "OTHER"),
        ("", "OTHER"),
        ("-- only a comment", "OTHER"),
    ],
)
def test_operation(sql, op):
    assert operation(sql) == op
    assert op in fp.OPERATIONS


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (ORM_SQL, ["bookshop_book", "bookshop_author"]),
        ("select * from books b, authors as a where b.a = a.id", ["books", "authors"]),
        (
            "SELECT * FROM public.users u LEFT OUTER JOIN public.groups g ON 1",
            ["public.users", "public.groups"],
        ),
        ('INSERT INTO "bookshop_book" ("title") VALUES (%s)', ["bookshop_book"]),
        ('UPDATE "bookshop_book" SET "pages" = %s', ["bookshop_book"]),
        ('DELETE FROM "t" WHERE "t"."id" IN (SELECT U0."id" FROM "u" U0)', ["t", "u"]),
        ('SELECT EXTRACT(YEAR FROM "t"."d") FROM "t"', ["t"]),
        ('SELECT * FROM "t" WHERE "t"."id" = %s FOR UPDATE', ["t"]),
        ('SELECT EXISTS(SELECT 1 FROM "u") FROM "t"', ["u", "t"]),
        ("CREATE TABLE IF NOT EXISTS foo (id int)", ["foo"]),
        ("SELECT * FROM (SELECT 1) sub", []),
        ('SELECT 1 FROM "a""b"', ['a"b']),
        ("SAVEPOINT x", []),
    ],
)
def test_tables(sql, expected):
    assert tables(sql) == expected


def test_tables_returns_a_fresh_list():
    found = tables(ORM_SQL)
    found.append("mutated")
    assert "mutated" not in tables(ORM_SQL)


def test_results_are_memoized():
    fp._analyse.cache_clear()
    fp._shape_key.cache_clear()
    for _ in range(100):
        fingerprint(ORM_SQL)
    assert fp._shape_key.cache_info().hits == 99
    # Different IN-list lengths are different strings but one shape: analysed once.
    for n in range(1, 50):
        normalize(ORM_SQL.replace("(%s, %s, %s)", "(" + ", ".join(["%s"] * n) + ")"))
    assert fp._analyse.cache_info().misses == 1


def test_fingerprints_ten_thousand_queries_a_second():
    """The collector fingerprints every query it stores; 10k/s is the floor we promise."""
    fp._analyse.cache_clear()
    fp._shape_key.cache_clear()
    workload = []
    for i in range(10_000):
        if i % 3 == 0:  # raw SQL: a new string every time, literals inline
            workload.append(f"SELECT * FROM books WHERE id = {i} AND title = 'book {i}'")
        elif i % 3 == 1:  # IN lists of every length
            workload.append(
                ORM_SQL.replace("(%s, %s, %s)", "(" + ", ".join(["%s"] * (i % 400 + 1)) + ")")
            )
        else:  # the common case: the same ORM SQL again
            workload.append(ORM_SQL)
    start = time.perf_counter()
    for sql in workload:
        fingerprint(sql)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"{len(workload) / elapsed:.0f} queries/s"
