"""Which query loaded an N+1's owner instance (``origin``), and where its root queryset was
built (``site``), on the installed Django."""

from __future__ import annotations

import pickle
import sys

import pytest
from django.db.models import Prefetch, prefetch_related_objects
from django.db.models.manager import BaseManager
from django.template import engines

from djangoscope.probe import capture
from djangoscope.probe.capture import origin
from djangoscope.resources.demo.bookshop.models import Author, Book, Publisher

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_probe_errors():
    """Every scenario here must work without a swallowed hook failure."""
    before = capture.error_counts()
    yield
    assert capture.error_counts() == before


def here(offset: int = 1) -> int:
    """The line ``offset`` lines below the caller's."""
    return sys._getframe(1).f_lineno + offset


def site(line: int, func: str) -> dict:
    return {"file": __file__, "line": line, "func": func}


def published_books():
    return Book.objects.filter(published=True)


HELPER_LINE = published_books.__code__.co_firstlineno + 1


def contexts(unit, op: str) -> list[tuple[int, dict]]:
    return [(i, q["orm"]) for i, q in enumerate(unit.queries) if q["orm"] and q["orm"]["op"] == op]


def test_fk_n_plus_one_points_at_the_books_query_and_its_site(recording, books):
    with recording() as unit:
        line = here()
        queryset = Book.objects.filter(pages__gt=0)
        names = []
        for book in queryset:
            names.append(book.author.name)
    assert names == ["Ann", "Ann", "Bob"]
    root = unit.queries[0]["orm"]
    assert root == {
        "op": "fetch",
        "model": "bookshop.Book",
        "site": site(line, "test_fk_n_plus_one_points_at_the_books_query_and_its_site"),
    }
    fks = contexts(unit, "fk")
    assert [i for i, _ in fks] == [1, 2, 3]
    assert [c["origin"] for _, c in fks] == [0, 0, 0]
    assert [c["instance"] for _, c in fks] == [f"bookshop.Book:{b.pk}" for b in books["books"]]
    # The same numbering as the message the sender builds.
    message = unit.to_message()["queries"]
    assert message[fks[0][1]["origin"]]["orm"]["op"] == "fetch"
    assert message[1]["orm"]["origin"] == 0


def test_iterator_rows_point_at_their_own_select_not_the_last_one(recording, books):
    with recording() as unit:
        queryset = Book.objects.filter(pages__gt=0)
        for book in queryset.iterator(chunk_size=1):
            _ = book.author.name  # the N+1 runs between the rows of the iterator
    root = unit.queries[0]["orm"]
    assert (root["op"], root["method"]) == ("queryset", "iterator")  # unchanged context
    fks = contexts(unit, "fk")
    assert [i for i, _ in fks] == [1, 2, 3]
    assert [c["origin"] for _, c in fks] == [0, 0, 0]  # not 1, 2: the previous author query


def test_select_related_instances_point_at_the_joined_query(recording, books):
    name = "test_select_related_instances_point_at_the_joined_query"
    with recording() as unit:
        line = here()
        queryset = Book.objects.filter(pages__gt=0)
        queryset = queryset.order_by("id").select_related("publisher")  # chained: same site
        for book in queryset:
            _ = book.author.name
            if book.publisher is not None:  # built by the join's RelatedPopulator
                book.publisher.books.count()
    root = unit.queries[0]["orm"]
    assert root == {
        "op": "fetch",
        "model": "bookshop.Book",
        "site": site(line, name),
        "select_related": ["publisher"],
    }
    assert [c["origin"] for _, c in contexts(unit, "fk")] == [0, 0, 0]
    counts = contexts(unit, "related_manager")
    assert [(c["model"], c["method"], c["origin"]) for _, c in counts] == [
        ("bookshop.Publisher", "count", 0)
    ] * 2


def test_prefetched_instances_point_at_the_prefetch_query(recording, books):
    name = "test_prefetched_instances_point_at_the_prefetch_query"
    with recording() as unit:
        line = here()
        authors = Author.objects.order_by("id").prefetch_related("books")
        publishers = [b.publisher for a in authors for b in a.books.all()]
    assert [p.name if p else None for p in publishers] == ["Penguin", None, "Penguin"]
    root, prefetch = unit.queries[0]["orm"], unit.queries[1]["orm"]
    assert root == {"op": "fetch", "model": "bookshop.Author", "site": site(line, name)}
    assert (prefetch["op"], prefetch["lookup"]) == ("prefetch", "books")
    assert prefetch["site"] == site(line, name)  # the root queryset that asked for it
    fks = contexts(unit, "fk")
    assert [(c["field"], c["origin"]) for _, c in fks] == [("publisher", 1)] * 2


def test_prefetch_to_attr_with_its_own_queryset(recording, books):
    name = "test_prefetch_to_attr_with_its_own_queryset"
    with recording() as unit:
        line = here()
        authors = Author.objects.prefetch_related(
            Prefetch("books", queryset=Book.objects.filter(pages__gt=0), to_attr="all_books")
        )
        _ = [b.publisher for a in authors for b in a.all_books]
    prefetch = unit.queries[1]["orm"]
    # The site is the root's (Author.objects...), not the Prefetch queryset's.
    assert (prefetch["lookup"], prefetch["site"]) == ("all_books", site(line, name))
    assert [c["origin"] for _, c in contexts(unit, "fk")] == [1, 1]  # Two has no publisher


def test_prefetch_called_directly_has_no_site(recording, books):
    authors = list(Author.objects.order_by("id"))
    with recording() as unit:
        prefetch_related_objects(authors, "books")
        _ = [b.publisher for b in authors[0].books.all()]
    prefetch = unit.queries[0]["orm"]
    assert prefetch["op"] == "prefetch"
    assert "site" not in prefetch
    assert [c["origin"] for _, c in contexts(unit, "fk")] == [0]


def test_reverse_fk_and_m2m_fetches_in_a_loop(recording, books):
    with recording() as unit:
        for author in Author.objects.order_by("id"):
            list(author.books.all())
        for book in Book.objects.all():
            list(book.tags.all())
    fetches = contexts(unit, "related_fetch")
    assert [(i, c["kind"], c["origin"]) for i, c in fetches] == [
        (1, "reverse_fk", 0),
        (2, "reverse_fk", 0),
        (4, "m2m", 3),
        (5, "m2m", 3),
        (6, "m2m", 3),
    ]
    assert [unit.queries[i]["orm"]["op"] for i in (0, 3)] == ["fetch", "fetch"]


def test_related_manager_count_in_a_loop(recording, books):
    with recording() as unit:
        counts = [a.books.count() for a in Author.objects.order_by("id")]
    assert counts == [2, 1]
    found = contexts(unit, "related_manager")
    assert [(c["method"], c["origin"]) for _, c in found] == [("count", 0), ("count", 0)]


def test_deferred_and_reverse_o2o_point_at_the_query_that_loaded_the_owner(recording, books):
    with recording() as unit:
        for book in Book.objects.only("title"):
            _ = book.isbn
        author = Book.objects.get(title="One").author  # the fk query loads the author...
        _ = author.profile  # ...which the reverse one-to-one then starts from
    assert [c["origin"] for _, c in contexts(unit, "deferred")] == [0, 0, 0]
    ((fk_index, fk),) = contexts(unit, "fk")
    get = fk["origin"]
    assert unit.queries[get]["orm"]["method"] == "get"
    ((_, reverse),) = contexts(unit, "reverse_o2o")
    assert reverse["origin"] == fk_index


def test_template_loop(recording, books):
    template = engines["django"].from_string(
        "<ul>\n{% for book in books %}\n<li>{{ book.author.name }}</li>\n{% endfor %}\n</ul>\n"
    )
    with recording() as unit:
        line = here()
        html = template.render({"books": Book.objects.filter(published=True)})
    assert html.count("<li>") == 3
    root = unit.queries[0]
    assert root["template"]["line"] == 2
    assert root["orm"] == {
        "op": "fetch",
        "model": "bookshop.Book",
        "site": site(line, "test_template_loop"),
    }
    fks = contexts(unit, "fk")
    assert [c["origin"] for _, c in fks] == [0, 0, 0]
    assert {unit.queries[i]["template"]["line"] for i, _ in fks} == {3}


def test_a_queryset_built_in_a_helper_reports_the_helper_line(recording, books):
    with recording() as unit:
        queryset = published_books()
        authors = [b.author for b in queryset.order_by("-id")]
    assert len(authors) == 3
    assert unit.queries[0]["orm"]["site"] == site(HELPER_LINE, "published_books")
    assert [c["origin"] for _, c in contexts(unit, "fk")] == [0, 0, 0]


def test_instances_built_in_code_or_loaded_outside_have_no_origin(recording, books):
    loaded_before = Book.objects.get(title="One")
    with recording() as unit:
        built = Book(title="new", isbn="9", author_id=books["bob"].pk)
        _ = built.author
        _ = loaded_before.author
        restored = pickle.loads(pickle.dumps(Book.objects.get(title="Three")))
        _ = restored.author  # loaded by this unit, then pickled (a cache): not that instance
    assert [c["instance"] for _, c in contexts(unit, "fk")] == [
        None,
        f"bookshop.Book:{loaded_before.pk}",
        f"bookshop.Book:{books['books'][2].pk}",
    ]
    assert all("origin" not in c for _, c in contexts(unit, "fk"))
    assert origin.origin_of(built) is None


def test_an_instance_loaded_in_one_unit_has_no_origin_in_the_next(recording, books):
    with recording() as first:
        book = Book.objects.get(title="One")
        _ = book.publisher
    with recording() as second:
        _ = book.author
        assert origin.origin_of(book) is None
    assert contexts(first, "fk")[0][1]["origin"] == 0
    ((_, fk),) = contexts(second, "fk")
    assert fk["field"] == "author"
    assert "origin" not in fk
    assert origin.origin_of(book) is None  # no unit at all


def test_roots_only_get_a_site_inside_a_unit(recording, books):
    outside = Book.objects.filter(published=True)
    assert origin.site_of(outside) is None
    ann = books["ann"]
    with recording():
        line = here()
        inside = Book.objects.filter(published=True)
        related = ann.books.filter(published=True)
        derived = inside.exclude(pages=0).order_by("-id").select_related("author")[:2]
        values = inside.values("title")
    expected = site(line, "test_roots_only_get_a_site_inside_a_unit")
    assert origin.site_of(inside) == expected
    assert origin.site_of(derived) == expected
    assert origin.site_of(values) == expected
    assert origin.site_of(related) is None  # a related manager's queryset is not a root
    assert origin.site_of(outside.filter(pages__gt=0)) is None
    # Querysets of one manager share its _hints dict: the site is not kept there.
    assert not Book.objects._hints


def test_querysets_stay_picklable(recording, books):
    with recording():
        queryset = Book.objects.filter(published=True)
        restored = pickle.loads(pickle.dumps(queryset))
    assert [b.title for b in restored] == ["One", "Two", "Three"]
    assert origin.site_of(restored) == origin.site_of(queryset)


def test_select_related_paths(recording, books):
    with recording() as unit:
        list(Book.objects.select_related())  # bare: every non-null foreign key
        list(Book.objects.select_related("author__profile", "publisher"))
        list(Author.objects.select_related("profile"))
        list(Publisher.objects.all())
    paths = [q["orm"].get("select_related") for q in unit.queries]
    assert paths == [["author"], ["author", "author__profile", "publisher"], ["profile"], None]


def test_get_queryset_wrapper_install_is_idempotent_and_uninstalls(installed):
    wrapped = BaseManager.__dict__["get_queryset"]
    assert getattr(wrapped, "__djangoscope__", False)
    origin.install()
    assert BaseManager.__dict__["get_queryset"] is wrapped
    origin.uninstall()
    try:
        assert BaseManager.__dict__["get_queryset"] is wrapped.__wrapped__
    finally:
        origin.install()
    assert getattr(BaseManager.__dict__["get_queryset"], "__djangoscope__", False)


@pytest.mark.parametrize("debug", [False, True])
def test_origin_with_and_without_the_debug_cursor_wrapper(recording, books, settings, debug):
    settings.DEBUG = debug  # DEBUG adds CursorDebugWrapper.execute between execute_sql and us
    for _ in range(2):  # the second time the depth where execute_sql was found last is tried
        with recording() as unit:
            authors = [b.author for b in Book.objects.all()]
            count = Book.objects.filter(author__in=authors).count()
        assert count == 3
        assert [c["origin"] for _, c in contexts(unit, "fk")] == [0, 0, 0]


def test_a_query_run_while_rows_are_built_is_not_their_loader(recording, books):
    from django.db.models.signals import post_init

    def receiver(sender, instance, **kwargs):
        if sender is Book:
            Publisher.objects.exists()  # runs inside ModelIterable.__iter__, not its SELECT

    post_init.connect(receiver, weak=False)
    try:
        with recording() as unit:
            names = [b.author.name for b in Book.objects.all()]
    finally:
        post_init.disconnect(receiver)
    assert names == ["Ann", "Ann", "Bob"]
    assert unit.queries[0]["orm"]["op"] == "fetch"
    assert [c["origin"] for _, c in contexts(unit, "fk")] == [0, 0, 0]


def test_nested_select_related_instances_share_the_joined_query(recording, books):
    with recording() as unit:
        Book.objects.count()
        book = Book.objects.select_related("author__profile", "publisher").get(title="One")
        loaded = [origin.origin_of(o) for o in (book, book.author, book.author.profile)]
        loaded.append(origin.origin_of(book.publisher))
    assert len(unit.queries) == 2
    assert loaded == [1, 1, 1, 1]


def test_full_row_save_says_which_fields_changed_and_by_how_much(recording, books):
    with recording() as unit:
        for book in Book.objects.filter(published=True).order_by("pk")[:3]:
            book.views += 2
            book.title = book.title + "!"
            book.save()
        single = Book.objects.order_by("pk").first()
        single.save(update_fields=["views"])  # update_fields given: nothing to say
    saves = [q["orm"] for q in unit.queries if (q["orm"] or {}).get("op") == "save"]
    assert len(saves) == 4
    for context in saves[:3]:
        assert context["changed"] == ["title", "views"]
        assert context["deltas"] == {"views": 2}
    assert "changed" not in saves[3]


def test_instance_built_in_code_has_no_changed_fields(recording, books):
    author = Author.objects.get(name="Ann")
    with recording() as unit:
        book = Book(title="New", isbn="x-1", author=author, pages=10, price=1)
        book.save()
        book.pages = 11
        book.save()
    saves = [q["orm"] for q in unit.queries if (q["orm"] or {}).get("op") == "save"]
    assert saves and all("changed" not in context for context in saves)


def test_fetch_context_counts_rows_and_the_relations_read(recording, books):
    with recording() as unit:
        rows = Book.objects.select_related("author", "publisher").order_by("pk")
        names = [book.author.name for book in rows]  # publisher joined, never read
    assert len(names) == 3
    message = unit.to_message()
    [fetch] = [q["orm"] for q in message["queries"] if (q["orm"] or {}).get("op") == "fetch"]
    assert fetch["select_related"] == ["author", "publisher"]
    assert fetch["rows"] == 3 + 3 + 2  # the books, their authors, the publishers that exist
    assert fetch["touched"] == ["author"]


def test_relation_read_outside_the_unit_is_not_touched(recording, books):
    with recording() as unit:
        rows = list(Book.objects.select_related("author").order_by("pk"))
    _ = [book.author for book in rows]  # after the request: not this unit's reads
    [fetch] = [q["orm"] for q in unit.to_message()["queries"]]
    assert fetch["touched"] == []


def test_related_manager_names_how_the_target_filters_by_its_owner(recording, books):
    ann = Author.objects.get(name="Ann")
    book = Book.objects.get(title="One")
    with recording() as unit:
        ann.books.count()
        book.tags.exists()
    reverse_fk, m2m = (q["orm"] for q in unit.queries)
    assert (reverse_fk["kind"], reverse_fk["remote"]) == ("reverse_fk", "author")
    assert (m2m["kind"], m2m["remote"]) == ("m2m", "books")
