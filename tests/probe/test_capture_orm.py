"""The ORM context read from frame locals, per operation, on the installed Django."""

from __future__ import annotations

import sys

import django
import pytest
from django.db.models import Prefetch

from djangoscope.probe import stacks
from djangoscope.probe.capture import orm
from djangoscope.resources.demo.bookshop.models import (
    Author,
    AuthorProfile,
    Book,
    Publisher,
    Review,
    Tag,
)

pytestmark = pytest.mark.django_db


def only_query(unit):
    assert len(unit.queries) == 1, [q["sql"] for q in unit.queries]
    return unit.queries[0]


def test_forward_fk_lazy_load(recording, books):
    book = Book.objects.get(pk=books["books"][0].pk)
    with recording() as unit:
        assert book.author.name == "Ann"
    assert only_query(unit)["orm"] == {
        "op": "fk",
        "model": "bookshop.Book",
        "field": "author",
        "target": "bookshop.Author",
        "relation": "fk",
        "instance": f"bookshop.Book:{book.pk}",
    }


def test_forward_o2o_and_nullable_fk(recording, books):
    profile = AuthorProfile.objects.get()
    book = Book.objects.get(title="One")
    with recording() as unit:
        _ = profile.author
        _ = book.publisher
    first, second = (q["orm"] for q in unit.queries)
    assert (first["op"], first["field"], first["relation"]) == ("fk", "author", "o2o")
    assert (second["op"], second["field"], second["target"]) == (
        "fk",
        "publisher",
        "bookshop.Publisher",
    )


def test_reverse_o2o(recording, books):
    ann = Author.objects.get(name="Ann")
    with recording() as unit:
        assert ann.profile.website
    assert only_query(unit)["orm"] == {
        "op": "reverse_o2o",
        "model": "bookshop.Author",
        "field": "profile",
        "target": "bookshop.AuthorProfile",
        "instance": f"bookshop.Author:{ann.pk}",
    }


def test_reverse_fk_all_iterated(recording, books):
    ann = Author.objects.get(name="Ann")
    with recording() as unit:
        titles = [b.title for b in ann.books.all()]
    assert titles == ["One", "Two"]
    context = only_query(unit)["orm"]
    assert context == {
        "op": "related_fetch",
        "model": "bookshop.Author",
        "field": "books",
        "target": "bookshop.Book",
        "kind": "reverse_fk",
        "prefetched": False,
        "filtered": False,
        "limited": False,
        "instance": f"bookshop.Author:{ann.pk}",
    }


def test_reverse_fk_filtered_and_sliced_bypasses_prefetch(recording, books):
    ann = Author.objects.prefetch_related("books").get(name="Ann")
    with recording() as unit:
        list(ann.books.all())  # served by the prefetch: no query
        list(ann.books.filter(pages__gt=1)[:1])
    context = only_query(unit)["orm"]
    assert context["op"] == "related_fetch"
    assert context["prefetched"] is True
    assert context["filtered"] is True
    assert context["limited"] is True


def test_m2m_forward_and_reverse(recording, books):
    book = Book.objects.get(title="One")
    red = Tag.objects.get(name="red")
    with recording() as unit:
        assert sorted(t.name for t in book.tags.all()) == ["blue", "red"]
        assert sorted(b.title for b in red.books.all()) == ["One", "Two"]
    forward, reverse = (q["orm"] for q in unit.queries)
    assert (forward["op"], forward["field"], forward["kind"], forward["target"]) == (
        "related_fetch",
        "tags",
        "m2m",
        "bookshop.Tag",
    )
    assert (reverse["model"], reverse["field"], reverse["target"]) == (
        "bookshop.Tag",
        "books",
        "bookshop.Book",
    )


def test_related_manager_count_exists_first(recording, books):
    ann = Author.objects.get(name="Ann")
    book = Book.objects.get(title="One")
    with recording() as unit:
        assert ann.books.count() == 2
        assert book.tags.exists()
        assert ann.books.first().title == "One"
        assert book.reviews.filter(rating__gte=4).count() == 1
    contexts = [q["orm"] for q in unit.queries]
    assert [(c["op"], c["method"], c["field"], c["kind"]) for c in contexts] == [
        ("related_manager", "count", "books", "reverse_fk"),
        ("related_manager", "exists", "tags", "m2m"),
        ("related_manager", "first", "books", "reverse_fk"),
        # .filter() returned before the query: the count on its queryset still names the
        # relation, and says the related queryset was filtered.
        ("related_manager", "count", "reviews", "reverse_fk"),
    ]
    assert contexts[3]["filtered"] is True
    assert contexts[0]["model"] == "bookshop.Author"
    assert contexts[0]["instance"] == f"bookshop.Author:{ann.pk}"
    assert contexts[0]["prefetched"] is False


def test_deferred_field_via_only(recording, books):
    book = Book.objects.only("title").get(title="One")
    with recording() as unit:
        assert book.isbn == "111"
    assert only_query(unit)["orm"] == {
        "op": "deferred",
        "model": "bookshop.Book",
        "field": "isbn",
        "instance": f"bookshop.Book:{book.pk}",
    }


def test_save_update_and_update_fields(recording, books):
    book = Book.objects.get(title="One")
    with recording() as unit:
        book.pages = 300
        book.save()
        book.save(update_fields=["pages"])
    full, partial = (q["orm"] for q in unit.queries)
    assert full == {
        "op": "save",
        "model": "bookshop.Book",
        "update_fields": None,
        "instance": f"bookshop.Book:{book.pk}",
    }
    assert partial["update_fields"] == ["pages"]
    assert unit.queries[0]["sql"].startswith("UPDATE")


def test_create_and_save_of_new_instance_are_inserts(recording, books):
    with recording() as unit:
        pub = Publisher.objects.create(name="New", country="FR")
        Review(book=books["books"][0], reviewer="z", rating=1).save()
    created, saved = (q["orm"] for q in unit.queries)
    assert created["op"] == "insert"
    assert created["model"] == "bookshop.Publisher"
    assert created["instance"] is None  # no pk before the INSERT returns
    assert saved["op"] == "insert"
    assert saved["model"] == "bookshop.Review"
    assert pub.pk


def test_bulk_create_bulk_update_update_delete(recording, books):
    ann = books["ann"]
    with recording() as unit:
        made = Book.objects.bulk_create(
            [Book(title=f"B{i}", isbn=str(i), author=ann) for i in range(3)]
        )
        for b in made:
            b.pages = 7
        Book.objects.bulk_update(made, ["pages"])
        Book.objects.filter(author=ann).update(views=1)
        Review.objects.filter(rating__lt=4).delete()
    ops = [q["orm"]["op"] for q in unit.queries]
    assert ops[0] == "bulk_create"
    assert unit.queries[0]["orm"] == {"op": "bulk_create", "model": "bookshop.Book", "count": 3}
    bulk_update = next(q["orm"] for q in unit.queries if q["orm"]["op"] == "bulk_update")
    assert bulk_update["fields"] == ["pages"]
    assert bulk_update["count"] == 3
    update = next(q["orm"] for q in unit.queries if q["orm"]["op"] == "update")
    assert update == {"op": "update", "model": "bookshop.Book", "fields": ["views"]}
    assert ops[-1] == "delete"
    assert unit.queries[-1]["orm"]["bulk"] is True


def test_queryset_api_methods(recording, books):
    with recording() as unit:
        Book.objects.count()
        Book.objects.filter(pages__gt=0).exists()
        Book.objects.get(title="One")
        Book.objects.first()
        Book.objects.last()
        Book.objects.in_bulk([1, 2])
        for _ in Book.objects.iterator(chunk_size=10):
            pass
    assert [(q["orm"]["op"], q["orm"]["method"]) for q in unit.queries] == [
        ("queryset", "count"),
        ("queryset", "exists"),
        ("queryset", "get"),
        ("queryset", "first"),
        ("queryset", "last"),
        ("queryset", "in_bulk"),
        ("queryset", "iterator"),
    ]
    assert {q["orm"]["model"] for q in unit.queries} == {"bookshop.Book"}


def test_plain_iteration_is_a_fetch_and_raw_sql_has_no_context(recording, books):
    from django.db import connection

    with recording() as unit:
        list(Book.objects.all())
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    fetch, raw = (q["orm"] for q in unit.queries)
    assert (fetch["op"], fetch["model"]) == ("fetch", "bookshop.Book")  # see test_capture_origin
    assert raw is None


def test_prefetch_queries(recording, books):
    with recording() as unit:
        authors = list(
            Author.objects.prefetch_related(
                "books__tags", Prefetch("books", queryset=Book.objects.all(), to_attr="all_books")
            )
        )
    assert len(authors) == 2
    contexts = [q["orm"] for q in unit.queries]
    assert contexts[0]["op"] == "fetch"  # the root queryset
    lookups = [(c["op"], c["lookup"]) for c in contexts[1:]]
    assert ("prefetch", "books") in lookups
    assert ("prefetch", "books__tags") in lookups
    assert ("prefetch", "all_books") in lookups


def test_call_site_is_the_innermost_app_frame(recording, books):
    book = Book.objects.get(title="One")
    with recording() as unit:
        line = sys._getframe().f_lineno + 1
        _ = book.author
    frames = stacks.resolve(unit.queries[0]["stack"])
    app = [f for f in frames if f["app"]]
    assert (app[-1]["file"], app[-1]["line"]) == (__file__, line)
    # ...and the frame it called is kept too: the FK descriptor it tripped over.
    assert frames[-1]["app"] is False
    assert frames[-1]["func"] == "ForwardManyToOneDescriptor.__get__"
    assert frames[-1]["file"].endswith("related_descriptors.py")


def test_instance_counts(recording, books):
    with recording() as unit:
        list(Book.objects.select_related("author"))
        list(Tag.objects.all())
        Publisher(name="unsaved", country="x")
    assert unit.instances == {
        "bookshop.Book": 3,
        "bookshop.Author": 3,
        "bookshop.Tag": 2,
        "bookshop.Publisher": 1,
    }


def test_signature_table_is_versioned():
    assert django.VERSION[:2] >= (4, 2)
    current = orm.build_table()
    names = {sig.reader for sig in current.values()}
    assert {"deferred", "fk", "reverse_o2o", "related_manager", "prefetch", "save"} <= names
    # Every row meant for this Django resolves: none silently missing.
    expected = [
        row
        for row in orm.SIGNATURES
        if row.since <= django.VERSION[:2] and (row.until is None or django.VERSION[:2] < row.until)
    ]
    assert len(current) == len(expected)
    # Django 4.2 uses get_prefetch_queryset (singular); 5.0+ get_prefetch_querysets.
    prefetch = [row for row in orm.SIGNATURES if row.reader == "prefetch_queryset"]
    old = {row.qualname for row in prefetch if row.until == (5, 0)}
    new = {row.qualname for row in prefetch if row.since == (5, 0)}
    assert len(old) == len(new) == 4
    assert all(q.endswith("get_prefetch_queryset") for q in old)
    assert all(q.endswith("get_prefetch_querysets") for q in new)
    # On 4.2 the plural names do not exist; on 5.x the singular ones still do (deprecated),
    # and the 4.2 table has no ManyRelatedManager.count/exists.
    if django.VERSION[:2] >= (5, 0):
        assert len(orm.build_table((4, 2))) == len(current) - 2
