"""Fix suggestions from real requests: each demo problem page gets its exact fix, twins get none."""

from __future__ import annotations

from pathlib import Path

import pytest

from djangoscope.app.core.analysis import analyze
from djangoscope.resources.demo.bookshop import views

pytestmark = pytest.mark.django_db(transaction=True)


def source_line(site) -> str:
    return Path(site.file).read_text().splitlines()[site.line - 1].strip()


def by_kind(store) -> dict[str, list]:
    found: dict[str, list] = {}
    for s in analyze(store):
        found.setdefault(s.kind, []).append(s)
    return found


def test_forward_fk_n_plus_one_in_a_template(record):
    [s] = analyze(record("/books/"))
    assert (s.kind, s.fix, s.model, s.field) == (
        "n_plus_one",
        '.select_related("author")',
        "bookshop.Book",
        "author",
    )
    assert (s.fire_site.file, s.fire_site.line) == ("bookshop/book_list.html", 5)
    # The fix goes where the queryset is built, not where the template iterates it.
    assert s.fix_site.file == views.__file__
    assert source_line(s.fix_site) == "books = Book.objects.filter(published=True)"
    assert s.queries_saved == 100 and s.ms_saved > 0
    assert s.severity == "high" and s.status == "open"
    assert "101 -> 1 queries" in s.detail


def test_many_to_many_gets_prefetch_related(record):
    [s] = analyze(record("/books/tags/"))
    assert (s.kind, s.fix, s.field) == ("n_plus_one", '.prefetch_related("tags")', "tags")
    assert s.queries_saved == 99  # 100 queries become one
    assert "101 -> 2 queries" in s.detail


def test_catalogue_gets_both_fixes_ranked_by_cost(record):
    suggestions = analyze(record("/catalogue/"))
    assert sorted(s.fix for s in suggestions) == [
        '.prefetch_related("tags")',
        '.select_related("author")',
    ]
    assert [s.ms_saved for s in suggestions] == sorted(
        (s.ms_saved for s in suggestions), reverse=True
    )


def test_count_in_a_loop_gets_annotate(record):
    [s] = analyze(record("/authors/"))
    assert s.kind == "related_count_in_loop"
    assert s.fix == '.annotate(num_books=Count("books"))'
    assert s.queries_saved == 20


def test_writes_in_a_loop_get_bulk_operations(record):
    found = by_kind(record("/books/touch/", "/reviews/add/"))
    [update] = found["update_in_loop"]
    assert update.queries_saved == 19  # all 20 saves, NULL publisher or not, in one group
    # Every save added 1 to views and changed nothing else: one UPDATE in SQL does it all.
    assert update.fix == 'Book.objects.filter(pk__in=ids).update(views=F("views") + 1)'
    [insert] = found["insert_in_loop"]
    assert insert.fix == "Review.objects.bulk_create(objs, batch_size=500)"
    assert "transaction.atomic()" in insert.detail


@pytest.mark.parametrize(
    "path",
    ["/books/fixed/", "/books/tags/fixed/", "/catalogue/fixed/", "/authors/fixed/"],
)
def test_fixed_twins_get_no_suggestion(record, path):
    assert analyze(record(path)) == []


def test_one_suggestion_per_endpoint_with_every_request_and_stable_ids(record):
    store = record("/books/", "/books/", "/books/")
    first = [s.to_dict() for s in analyze(store)]
    second = [s.to_dict() for s in analyze(store)]
    assert first == second
    [s] = first
    assert len(s["request_ids"]) == 3 and s["occurrences"] == 3
    assert s["endpoint"] == "GET books/"


def test_applied_fix_is_marked_resolved_with_before_and_after(record, fixable):
    record("/books/", "/books/")
    fixable["books"] = True  # the user edits the view; runserver reloads
    store = record("/books/")
    [s] = analyze(store)
    assert s.status == "resolved"
    assert s.before["queries"] == 101 and s.after["queries"] == 1
    assert s.after["ms"] < s.before["ms"]


def test_single_lazy_access_from_a_list_is_not_an_n_plus_one(record, fixable):
    assert analyze(record("/one-from-a-list/")) == []


def test_two_single_rows_on_one_line_are_not_an_n_plus_one(record, fixable):
    # Two .get() owners, each from its own query: no loop over one queryset.
    assert analyze(record("/two-singles/")) == []


def test_nested_relation_below_a_prefetch_gets_the_nested_path(record, fixable):
    [s] = analyze(record("/authors-books-publishers/"))
    assert s.fix == '.prefetch_related("books__publisher")'
    assert s.field == "publisher"
    assert source_line(s.fix_site).startswith("authors = Author.objects.prefetch_related(")


def test_filtered_related_queryset_gets_prefetch_to_attr(record, fixable):
    [s] = analyze(record("/authors-long-books/"))
    assert s.kind == "n_plus_one" and s.field == "books"
    # The filter exactly as the view wrote it after `a.books`.
    assert s.fix == (
        '.prefetch_related(Prefetch("books", queryset=Book.objects.filter(pages__gt=100), '
        'to_attr="books_list"))'
    )


def test_count_served_by_a_prefetch_is_silent(record, fixable):
    assert analyze(record("/authors-prefetched-count/")) == []


def test_exists_per_item_gets_one_in_query(record):
    [s] = analyze(record("/many/"))
    assert s.kind == "get_in_loop" and s.field == "isbn"
    assert s.fix == (
        'found = set(Book.objects.filter(isbn__in=values).values_list("isbn", flat=True))'
    )
    assert s.queries_saved == 499
    assert "500 -> 1 queries" in s.detail


def test_exists_fixed_twin_is_silent(record):
    assert analyze(record("/many/fixed/")) == []


def test_cache_key_that_changes_every_request(record):
    suggestions = [s for s in analyze(record(*["/slow-cache/"] * 3)) if s.kind.startswith("cache")]
    [s] = suggestions
    assert s.kind == "cache_recompute"
    assert s.fix == 'cache.get_or_set("bookshop:bestsellers", compute, timeout=300)'
    assert s.ms_saved >= 30  # the chart takes 30 ms to draw
    assert s.queries_saved == 1 and len(s.request_ids) == 3


def test_stable_cache_key_is_silent(record):
    kinds = {s.kind for s in analyze(record(*["/slow-cache/fixed/"] * 3))}
    assert not kinds & {"cache_recompute", "cache_candidate"}


def test_same_aggregate_on_every_request_is_a_cache_candidate(record):
    found = by_kind(record("/stats/", "/stats/", "/stats/"))
    [candidate] = found["cache_candidate"]
    assert candidate.fix.startswith('cache.get_or_set("stats:data", compute')
    assert len(candidate.request_ids) == 3
    [duplicate] = found["duplicate_query"]  # publisher_stats() runs twice per request
    assert duplicate.queries_saved == 1


def test_writes_on_a_get_without_a_transaction(record):
    found = by_kind(record("/visit/"))
    [atomic] = found["writes_without_transaction"]
    assert atomic.fix == "with transaction.atomic():"
    [request_path] = found["slow_write_in_request"]
    assert request_path.fix == "transaction.on_commit(lambda: task.delay(...))"
    assert request_path.queries_saved == 2


def test_admin_changelist_gets_list_select_related_on_the_model_admin(record):
    from djangoscope.resources.demo.bookshop import admin as demo_admin

    found = analyze(record("/admin/bookshop/book/", staff=True))
    n_plus_one = [s for s in found if s.kind == "n_plus_one"]
    assert {s.field for s in n_plus_one} == {"author", "publisher"}
    for s in n_plus_one:
        # One tuple with every relation: a tuple replaces Django's own select_related().
        assert s.fix == 'list_select_related = ("author", "publisher")'
        assert s.fix_site.file == demo_admin.__file__
        source = Path(demo_admin.__file__).read_text().splitlines()
        assert source[s.fix_site.line - 1].startswith("class BookAdmin(")
        assert s.fire_site.file == demo_admin.__file__
        assert f"book.{s.field}" in source[s.fire_site.line - 1]


def test_admin_changelist_with_list_select_related_is_silent(record):
    found = analyze(record("/admin-fixed/bookshop/book/", staff=True))
    assert [s for s in found if s.kind == "n_plus_one"] == []


@pytest.mark.parametrize("path", ["/books/touch/fixed/", "/reviews/add/fixed/"])
def test_one_write_or_one_transaction_on_a_get_is_not_flagged(record, path):
    assert analyze(record(path)) == []


def test_full_row_save_gets_update_fields(record, fixable):
    [s] = analyze(record("/rename-one/"))
    assert s.kind == "full_row_save"
    assert s.fix == '.save(update_fields=["title"])'
    assert source_line(s.fire_site) == "book.save()"


def test_save_with_update_fields_is_silent(record, fixable):
    assert analyze(record("/rename-one/?fixed=1")) == []


def test_text_report_shows_the_fix_the_sites_and_the_resolved_figures(record, fixable):
    from djangoscope.app.core.report import build_report, format_report

    record("/books/", "/books/")
    fixable["books"] = True
    text = format_report(build_report(record("/books/", "/catalogue/")))
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert "Suggestions (2 open, 1 resolved)" in lines
    assert '    fix: .select_related("author") (-100 queries, ' in text
    assert any(line.startswith("    fire site: bookshop/catalogue.html:5") for line in lines)
    assert any(
        line.startswith('[resolved] GET books/: .select_related("author"): 101 -> 1 queries')
        for line in lines
    )


def test_join_that_no_request_reads_is_an_unused_eager_load(record, fixable):
    [s] = analyze(record("/books-with-publishers/", "/books-with-publishers/"))
    assert (s.kind, s.field) == ("unused_eager_load", "publisher")
    assert s.fix == 'remove "publisher" from .select_related(...)'
    assert source_line(s.fix_site).startswith("books = Book.objects.filter(published=True)")
    assert len(s.request_ids) == 2


def test_join_read_by_another_request_of_the_endpoint_is_used(record, fixable):
    # The first request reads only authors, the second only publishers: both joins are used.
    store = record("/books-with-publishers/", "/books-with-publishers/?show=publisher")
    assert [s for s in analyze(store) if s.kind == "unused_eager_load"] == []


def test_exists_in_a_loop_gets_an_exists_subquery(record, fixable):
    [s] = analyze(record("/authors-with-books/"))
    assert s.kind == "related_exists_in_loop"
    assert s.fix == '.annotate(has_books=Exists(Book.objects.filter(author=OuterRef("pk"))))'
    assert source_line(s.fix_site) == 'authors = Author.objects.order_by("name")'


def test_related_chain_is_read_as_written(tmp_path):
    from djangoscope.app.core.analysis import Site, _related_chain

    code = tmp_path / "views.py"
    code.write_text(
        "x = 1\n"
        '    rows = [len(a.books.filter(title__contains=")(").order_by("-id").all()) for a in q]\n'
        "    other = a.books.count()\n"
    )
    assert _related_chain(Site(str(code), 2), "books") == (
        '.filter(title__contains=")(").order_by("-id")'
    )
    assert _related_chain(Site(str(code), 3), "books") is None  # count(): nothing to carry
    assert _related_chain(Site(str(tmp_path / "gone.py"), 1), "books") is None
