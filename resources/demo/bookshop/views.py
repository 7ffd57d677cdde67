"""The demo bookshop's views: each problem from the talk as ordinary Django code, and its fix.

Each "problem" view is written the way it usually is in a real project; its ``*_fixed`` twin
applies the change djangoscope suggests and renders the same data. Query counts per request,
with the default seed (100 books, 20 authors), in autocommit as under ``runserver``, counting
BEGIN / COMMIT / SAVEPOINT statements as Django's ``connection.queries`` does:

    /books/ 101 -> /books/fixed/ 1            select_related("author")
    /books/tags/ 101 -> /books/tags/fixed/ 2  prefetch_related("tags")
    /catalogue/ 201 -> /catalogue/fixed/ 2    select_related("author").prefetch_related("tags")
    /authors/ 21 -> /authors/fixed/ 1         annotate(num_books=Count("books"))
    /books/touch/ 21 -> fixed 2               update(views=F("views") + 1)
    /reviews/add/ 24 -> fixed 5               bulk_create in atomic()
    /stats/ 2 -> fixed 1 cold, 0 warm         cache.get_or_set
    /slow-cache/ 1 -> fixed 1 cold, 0 warm    a stable cache key
    /visit/ 3, /api/books/ 2, /api/cache/ 0, /many/ 500 -> fixed 1, /raw/ 8, /error/ 1 (HTTP 500)

``djangoscope.resources.demo.pages.PAGES`` holds the same numbers for code; the tests assert them.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.cache import BaseCache, cache, caches
from django.db import IntegrityError, connection, transaction
from django.db.models import Avg, Count, F, Q, Sum
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from djangoscope.resources.demo.pages import PAGES, PAGES_BY_NAME

from .models import Author, Book, Publisher, Review, Tag, Visit
from .seed import isbn_for

FEATURED_BOOKS = 20
FEED_REVIEWER_PREFIX = "feed:"
STATS_CACHE_KEY = "bookshop:publisher-stats"
BESTSELLERS_CACHE_KEY = "bookshop:bestsellers:v1"
CACHE_TTL = 300
SUPPLIER_LIST_SIZE = 500
SUPPLIER_LIST_MAX = 5000
CHART_SECONDS = 0.03


def _render(request: HttpRequest, template: str, context: dict[str, Any]) -> HttpResponse:
    """Render with the navigation and the current page's entry (problem, twin, query count)."""
    view_name = request.resolver_match.view_name if request.resolver_match else ""
    page = PAGES_BY_NAME.get(view_name.removesuffix("_fixed"))
    return render(
        request,
        template,
        {
            "pages": PAGES,
            "page": page,
            "is_fixed": view_name.endswith("_fixed"),
            **context,
        },
    )


def _featured_book() -> Book:
    book = Book.objects.filter(published=True).first()
    if book is None:
        raise Http404("No books yet: run `manage.py seed_bookshop` first.")
    return book


def index(request: HttpRequest) -> HttpResponse:
    """Every demo page with the problem it shows and its query count; no query itself."""
    return _render(request, "bookshop/index.html", {})


# 1. N+1 on a forward foreign key, fired from the template ------------------------------------


def book_list(request: HttpRequest) -> HttpResponse:
    """Published books with their author's name."""
    books = Book.objects.filter(published=True)
    return _render(request, "bookshop/book_list.html", {"books": books})


def book_list_fixed(request: HttpRequest) -> HttpResponse:
    """The fix: join the authors into the books query."""
    books = Book.objects.filter(published=True).select_related("author")
    return _render(request, "bookshop/book_list.html", {"books": books})


# 2. N+1 on a many-to-many ---------------------------------------------------------------------


def book_tags(request: HttpRequest) -> HttpResponse:
    """Published books with their tags."""
    books = Book.objects.filter(published=True)
    return _render(request, "bookshop/book_tags.html", {"books": books})


def book_tags_fixed(request: HttpRequest) -> HttpResponse:
    """The fix: fetch every book's tags in one more query."""
    books = Book.objects.filter(published=True).prefetch_related("tags")
    return _render(request, "bookshop/book_tags.html", {"books": books})


def catalogue(request: HttpRequest) -> HttpResponse:
    """The full catalogue: each book with its author and its tags (both lazy: 2 queries a row)."""
    books = Book.objects.filter(published=True)
    return _render(request, "bookshop/catalogue.html", {"books": books})


def catalogue_fixed(request: HttpRequest) -> HttpResponse:
    """The fix: join the author, prefetch the tags."""
    books = Book.objects.filter(published=True).select_related("author").prefetch_related("tags")
    return _render(request, "bookshop/catalogue.html", {"books": books})


# 3. COUNT per row -----------------------------------------------------------------------------


def author_list(request: HttpRequest) -> HttpResponse:
    """Authors with how many books each wrote."""
    authors = Author.objects.order_by("name")
    return _render(request, "bookshop/author_list.html", {"authors": authors})


def author_list_fixed(request: HttpRequest) -> HttpResponse:
    """The fix: let the database count, in the authors query."""
    authors = Author.objects.annotate(num_books=Count("books")).order_by("name")
    return _render(request, "bookshop/author_list_fixed.html", {"authors": authors})


# 4. save() in a loop --------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def touch_books(request: HttpRequest) -> HttpResponse:
    """Count one view for each featured book (GET works too, so plain traffic can drive it)."""
    books = list(Book.objects.filter(published=True)[:FEATURED_BOOKS])
    for book in books:
        book.views += 1
        book.save()
    return _render(request, "bookshop/touch.html", {"books": books})


@require_http_methods(["GET", "POST"])
def touch_books_fixed(request: HttpRequest) -> HttpResponse:
    """The fix: one UPDATE that increments in SQL (no save() signals, none are used here)."""
    books = list(Book.objects.filter(published=True)[:FEATURED_BOOKS])
    Book.objects.filter(pk__in=[book.pk for book in books]).update(views=F("views") + 1)
    for book in books:
        book.views += 1  # the database did the same; no need to read the rows again
    return _render(request, "bookshop/touch.html", {"books": books})


# 5. INSERTs in a loop -------------------------------------------------------------------------


def review_feed(book: Book) -> list[dict[str, Any]]:
    """The partner site's latest reviews of ``book`` (fixed data: the demo makes no HTTP call)."""
    return [
        {
            "reviewer": f"{FEED_REVIEWER_PREFIX}reader{n:02d}",
            "rating": 1 + (n * 3 + book.pk) % 5,
            "body": f"Review {n + 1} of {book.title}, imported from the partner feed.",
        }
        for n in range(20)
    ]


@require_http_methods(["GET", "POST"])
def import_reviews(request: HttpRequest) -> HttpResponse:
    """Replace the feed's reviews of the featured book by the latest ones, one by one."""
    book = _featured_book()
    Review.objects.filter(book=book, reviewer__startswith=FEED_REVIEWER_PREFIX).delete()
    reviews = [Review.objects.create(book=book, **entry) for entry in review_feed(book)]
    return _render(request, "bookshop/reviews.html", {"book": book, "reviews": reviews})


@require_http_methods(["GET", "POST"])
def import_reviews_fixed(request: HttpRequest) -> HttpResponse:
    """The fix: one multi-row INSERT, in one transaction with the DELETE."""
    book = _featured_book()
    with transaction.atomic():
        Review.objects.filter(book=book, reviewer__startswith=FEED_REVIEWER_PREFIX).delete()
        reviews = Review.objects.bulk_create(
            [Review(book=book, **entry) for entry in review_feed(book)]
        )
    return _render(request, "bookshop/reviews.html", {"book": book, "reviews": reviews})


# 6. The same aggregate on every request -------------------------------------------------------


def publisher_stats() -> list[Publisher]:
    """Books, average price and total views per publisher: a join and a GROUP BY over all books."""
    return list(
        Publisher.objects.annotate(
            num_books=Count("books", filter=Q(books__published=True)),
            avg_price=Avg("books__price"),
            total_views=Sum("books__views"),
        ).order_by("-num_books", "name")
    )


def top_publishers(limit: int = 3) -> list[Publisher]:
    """The podium shown above the table."""
    return publisher_stats()[:limit]


def stats(request: HttpRequest) -> HttpResponse:
    """The statistics table, with the podium above it."""
    context = {"publishers": publisher_stats(), "top_publishers": top_publishers()}
    return _render(request, "bookshop/stats.html", context)


def stats_fixed(request: HttpRequest) -> HttpResponse:
    """The fix: compute once, cache for five minutes, reuse for the podium."""
    publishers = cache.get_or_set(STATS_CACHE_KEY, publisher_stats, CACHE_TTL)
    context = {"publishers": publishers, "top_publishers": publishers[:3]}
    return _render(request, "bookshop/stats.html", context)


# 7. A cache that always misses ----------------------------------------------------------------


def _bestsellers_cache() -> BaseCache:
    # The demo settings define a "slow" alias whose misses cost ~20 ms; settings without it
    # (the test settings) get the default cache.
    return caches["slow" if "slow" in settings.CACHES else "default"]


def draw_sales_chart(books: list[Book]) -> str:
    """Stands for the expensive computation the cache is there to save: a fixed 30 ms."""
    time.sleep(CHART_SECONDS)
    return "".join("#" * max(1, book.views // 500) + "\n" for book in books)


def compute_bestsellers() -> dict[str, Any]:
    """The ten most viewed books and their chart: what the bestsellers cache holds."""
    books = list(Book.objects.filter(published=True).order_by("-views", "id")[:10])
    return {"books": books, "chart": draw_sales_chart(books)}


def slow_cache(request: HttpRequest) -> HttpResponse:
    """Bestsellers behind a cache that never hits."""
    # Meant as a version stamp that changes on deploy; it is the clock, so every request misses,
    # redoes the work and stores one more entry nobody will read.
    key = f"bookshop:bestsellers:{time.time_ns()}"
    store = _bestsellers_cache()
    bestsellers = store.get(key)
    if bestsellers is None:
        bestsellers = compute_bestsellers()
        store.set(key, bestsellers, CACHE_TTL)
    return _render(request, "bookshop/bestsellers.html", bestsellers)


def slow_cache_fixed(request: HttpRequest) -> HttpResponse:
    """The fix: a stable key, so the second request is a hit."""
    store = _bestsellers_cache()
    bestsellers = store.get_or_set(BESTSELLERS_CACHE_KEY, compute_bestsellers, CACHE_TTL)
    return _render(request, "bookshop/bestsellers.html", bestsellers)


# 8. Writes in the request path ----------------------------------------------------------------


def visit(request: HttpRequest) -> HttpResponse:
    """Show the book of the day, logging the visit and bumping its counter before answering."""
    book = _featured_book()
    Visit.objects.create(path=request.path)
    Book.objects.filter(pk=book.pk).update(views=F("views") + 1)
    return _render(request, "bookshop/visit.html", {"book": book})


# 9. Async views -------------------------------------------------------------------------------


async def api_books(request: HttpRequest) -> JsonResponse:
    """The first 20 published books and the total, through the async ORM."""
    published = Book.objects.filter(published=True)
    results = [
        {"id": book.pk, "title": book.title, "isbn": book.isbn, "views": book.views}
        async for book in published[:FEATURED_BOOKS]
    ]
    return JsonResponse({"count": await published.acount(), "results": results})


async def api_cache(request: HttpRequest) -> JsonResponse:
    """A hit counter and a cached banner, with the async cache API only."""
    await cache.aadd("bookshop:api-hits", 0, timeout=None)
    hits = await cache.aincr("bookshop:api-hits")
    banner = await cache.aget("bookshop:banner")
    if banner is None:
        banner = "Welcome to the djangoscope demo bookshop"
        await cache.aset("bookshop:banner", banner, 30)
    return JsonResponse({"hits": hits, "banner": banner})


# 10. Benchmark page, a crash, raw SQL ---------------------------------------------------------


def _supplier_isbns(request: HttpRequest) -> list[str]:
    """The supplier's list: ``?n=`` ISBNs (default 500), the first 100 of which we stock."""
    try:
        size = int(request.GET.get("n", SUPPLIER_LIST_SIZE))
    except ValueError:
        size = SUPPLIER_LIST_SIZE
    return [isbn_for(i) for i in range(max(1, min(size, SUPPLIER_LIST_MAX)))]


def stock_check(request: HttpRequest) -> HttpResponse:
    """Which ISBNs of the supplier's list do we stock?"""
    wanted = _supplier_isbns(request)
    in_stock = [isbn for isbn in wanted if Book.objects.filter(isbn=isbn).exists()]
    return _render(request, "bookshop/stock.html", {"wanted": wanted, "in_stock": in_stock})


def stock_check_fixed(request: HttpRequest) -> HttpResponse:
    """The fix: one query with ``isbn__in`` for the whole list."""
    wanted = _supplier_isbns(request)
    stocked = set(Book.objects.filter(isbn__in=wanted).values_list("isbn", flat=True))
    in_stock = [isbn for isbn in wanted if isbn in stocked]
    return _render(request, "bookshop/stock.html", {"wanted": wanted, "in_stock": in_stock})


def error(request: HttpRequest) -> HttpResponse:
    """Average rating of the upcoming books. There are none, and nobody checked."""
    ratings = list(Review.objects.filter(book__published=False).values_list("rating", flat=True))
    average = sum(ratings) / len(ratings)
    return HttpResponse(f"Upcoming books are rated {average:.1f} on average.")


def raw_sql(request: HttpRequest) -> HttpResponse:
    """Bump the featured books' counters with hand-written SQL, and make sure a tag exists."""
    quote = connection.ops.quote_name
    book_table, tag_table = quote(Book._meta.db_table), quote(Tag._meta.db_table)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, title FROM {book_table} WHERE published = %s ORDER BY id LIMIT %s",
            [True, FEATURED_BOOKS],
        )
        rows = cursor.fetchall()
        cursor.executemany(
            f"UPDATE {book_table} SET views = views + 1 WHERE id = %s", [(pk,) for pk, _ in rows]
        )
        try:
            # A savepoint, so a duplicate only undoes this INSERT, not the UPDATEs above.
            with transaction.atomic():
                cursor.execute(f"INSERT INTO {tag_table} (name) VALUES (%s)", ["classic"])
            tag_created = True
        except IntegrityError:
            tag_created = False
    return _render(request, "bookshop/raw.html", {"rows": rows, "tag_created": tag_created})
