"""Param redaction and JSON-safety (the sender thread's job), on real and hand-written SQL."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import json
import uuid

import pytest
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore

from djangoscope.probe.capture.redact import bind_columns, looks_like_password_hash, make_redactor
from djangoscope.probe.conf import REDACTED, get_config

R = REDACTED


@pytest.fixture
def redact():
    return make_redactor(get_config())


def test_insert_columns_by_position(redact):
    sql = (
        'INSERT INTO "auth_user" ("password", "last_login", "username", "author_id") '
        "VALUES (%s, %s, %s, %s), (%s, %s, %s, %s)"
    )
    params = ("pw1", None, "ann", 3, "pw2", None, "bob", 4)
    assert redact(sql, params, False) == [R, None, "ann", 3, R, None, "bob", 4]


def test_where_in_like_set_and_between(redact):
    sql = (
        'SELECT * FROM "django_session" WHERE ("django_session"."expire_date" > %s '
        'AND "django_session"."session_key" = %s AND "t"."token" IN (%s, %s) '
        'AND "t"."api_key" LIKE %s ESCAPE \'\\\' AND "t"."pin" BETWEEN %s AND %s '
        'AND "t"."title" = %s) LIMIT %s'
    )
    params = ("2026-01-01", "sk", "t1", "t2", "k%", 1, 9, "Dune", 21)
    assert redact(sql, params, False) == ["2026-01-01", R, R, R, R, R, R, "Dune", 21]


def test_update_set_functions_and_casts(redact):
    sql = (
        'UPDATE "accounts" SET "secret" = %s, "name" = %s '
        'WHERE UPPER("accounts"."password_hash"::text) = UPPER(%s) AND "accounts"."id" = %s'
    )
    assert redact(sql, ["s", "n", "h", 7], False) == [R, "n", R, 7]


def test_bulk_update_case_values_bind_to_the_set_column(redact):
    sql = (
        'UPDATE "auth_user" SET "password" = CASE WHEN ("auth_user"."id" = %s) THEN %s '
        'WHEN ("auth_user"."id" = %s) THEN %s ELSE NULL END, "first_name" = CASE WHEN '
        '("auth_user"."id" = %s) THEN %s ELSE NULL END WHERE "auth_user"."id" IN (%s, %s)'
    )
    params = [1, "a", 2, "b", 1, "Ann", 1, 2]
    assert redact(sql, params, False) == [1, R, 2, R, 1, "Ann", 1, 2]


def test_sensitive_words_not_substrings(redact):
    sql = (
        'SELECT 1 WHERE "author_id" = %s AND "authorship" = %s AND "x_api_key" = %s '
        'AND "accessToken" = %s AND "auth" = %s AND "opinion" = %s AND "pin_code" = %s'
    )
    assert redact(sql, [1, 2, 3, 4, 5, 6, 7], False) == [1, 2, R, R, R, 6, R]


def test_password_hash_shapes_are_redacted_anywhere(redact):
    hashes = [
        make_password("s3cret", hasher="pbkdf2_sha256"),
        "argon2$argon2id$v=19$m=102400,t=2,p=8$c2FsdA$aGFzaA",
        "bcrypt_sha256$$2b$12$abcdefghijklmnopqrstuu5QzTzQy1Ew9J1",
        "scrypt$16384$salt$8$1$aGFzaA==",
        "sha1$salt$0123456789abcdef",
        "md5$salt$0123456789abcdef",
        "custom_hasher$1000$salt$hash",
    ]
    sql = "SELECT %s" + ", %s" * len(hashes)
    assert redact(sql, ["ok", *hashes], False) == ["ok"] + [R] * len(hashes)
    assert all(looks_like_password_hash(h) for h in hashes)
    for plain in ("price $5", "a$b", "$$", "US$ 100$ total", "pbkdf2_sha256"):
        assert not looks_like_password_hash(plain)


def test_json_safe_values(redact):
    cfg = dataclasses.replace(get_config(), max_param_length=10)
    cut = make_redactor(cfg)
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    ident = uuid.UUID(int=1)
    params = [
        None,
        True,
        7,
        1.5,
        float("nan"),
        "x" * 25,
        b"\x00\x01\x02\x03\x04",
        bytearray(3),
        memoryview(b"ab"),
        decimal.Decimal("9.99"),
        datetime.date(2026, 1, 2),
        when,
        ident,
        [1, "two"],
        object(),
    ]
    out = cut("SELECT " + ", ".join(["%s"] * len(params)), params, False)
    assert out[:6] == [None, True, 7, 1.5, "nan", "x" * 10 + "…"]
    assert out[6:9] == ["<5 bytes>", "<3 bytes>", "<2 bytes>"]
    assert out[9:12] == ["9.99", "2026-01-02", "2026-01-02…"]
    assert out[12] == "00000000-0…"
    assert out[13] == [1, "two"]
    assert out[14].startswith("<object ob") and out[14].endswith("…")
    json.dumps(out, allow_nan=False)


def test_default_length_cut(redact):
    (value,) = redact("SELECT %s", ["y" * 500], False)
    assert value == "y" * 200 + "…"


def test_executemany_rows(redact):
    sql = 'INSERT INTO "t" ("name", "password") VALUES (%s, %s)'
    assert redact(sql, [("a", "p1"), ("b", "p2")], True) == [["a", R], ["b", R]]


def test_dict_params(redact):
    sql = 'SELECT 1 WHERE "password" = %(pw)s AND "name" = %(name)s'
    assert redact(sql, {"pw": "x", "name": "n", "token": "t"}, False) == {
        "pw": R,
        "name": "n",
        "token": R,
    }


def test_no_params_and_capture_params_off(redact):
    assert redact("SELECT 1", None, False) is None
    off = make_redactor(dataclasses.replace(get_config(), capture_params=False))
    assert off('SELECT 1 WHERE "name" = %s', ["n"], False) is None


def test_placeholders_in_literals_and_escaped_percent():
    sql = 'SELECT \'%s\', "x" LIKE \'100%%\' AND "secret" = %s AND "a" = %%s'
    assert bind_columns(sql) == [("secret", None)]


@pytest.mark.django_db
def test_real_orm_user_and_session_are_redacted(recording):
    with recording() as unit:
        User.objects.create_user("ann", "ann@example.com", "hunter2")
        session = SessionStore()
        session["k"] = "v"
        session.save()
        SessionStore(session_key=session.session_key).load()
    message = unit.to_message(redactor=make_redactor(get_config()))
    text = json.dumps(message)
    assert "hunter2" not in text
    assert "pbkdf2_sha256$" not in text
    assert session.session_key not in text
    queries = message["queries"]
    insert_user = next(q for q in queries if q["sql"].startswith('INSERT INTO "auth_user"'))
    assert R in insert_user["params"]
    assert "ann" in insert_user["params"]
    session_reads = [q for q in queries if 'FROM "django_session"' in q["sql"] and q["params"]]
    assert session_reads and all(R in q["params"] for q in session_reads)


@pytest.mark.django_db
def test_session_keys_never_leave_through_orm_context_or_cache_keys(recording, settings):
    from django.contrib.sessions.backends.cache import SessionStore as CacheSession

    with recording() as unit:
        db_session = SessionStore()
        db_session["k"] = "v"
        db_session.save()  # the INSERT's ORM context names the instance by pk = session key
        cached = CacheSession()
        cached["k"] = "v"
        cached.save()
        CacheSession(session_key=cached.session_key).load()
    text = json.dumps(unit.to_message(redactor=make_redactor(get_config())))
    assert db_session.session_key not in text
    assert cached.session_key not in text
    contexts = [q["orm"] for q in unit.queries if q["orm"] and q["orm"].get("instance")]
    assert contexts and all(c["instance"].startswith(f"sessions.Session:{R}#") for c in contexts)
    keys = [k for c in unit.cache for k in c["keys"]]
    assert keys and all(k == f"django.contrib.sessions.cache{R}" for k in keys)
