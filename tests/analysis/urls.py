"""A URLconf whose /books/ page can be "fixed" between requests, as an edit + autoreload would."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.urls import include, path

from djangoscope.resources.demo.bookshop.models import Author, Book

#: Flipped by the tests: True is the code after the user applied the suggestion.
FIXED = {"books": False}

_TEMPLATE = engines["django"].from_string(
    "{% for book in books %}{{ book.title }} by {{ book.author.name }}\n{% endfor %}"
)


def books(request: HttpRequest) -> HttpResponse:
    queryset = Book.objects.filter(published=True)
    if FIXED["books"]:
        queryset = queryset.select_related("author")
    return HttpResponse(_TEMPLATE.render({"books": queryset}))


def two_singles(request: HttpRequest) -> HttpResponse:
    first, second = Book.objects.order_by("pk")[:2]
    names = [Book.objects.get(pk=first.pk).author.name, Book.objects.get(pk=second.pk).author.name]
    return HttpResponse(", ".join(names))


def one_from_a_list(request: HttpRequest) -> HttpResponse:
    books = list(Book.objects.filter(published=True))
    return HttpResponse(books[0].author.name)


def authors_books_publishers(request: HttpRequest) -> HttpResponse:
    authors = Author.objects.prefetch_related("books").order_by("name")
    rows = [f"{b.title}: {b.publisher}" for a in authors for b in a.books.all()]
    return HttpResponse("\n".join(rows))


def authors_long_books(request: HttpRequest) -> HttpResponse:
    authors = Author.objects.order_by("name")
    rows = [f"{a.name}: {list(a.books.filter(pages__gt=100))}" for a in authors]
    return HttpResponse("\n".join(rows))


def authors_prefetched_count(request: HttpRequest) -> HttpResponse:
    authors = Author.objects.prefetch_related("books").order_by("name")
    return HttpResponse("\n".join(f"{a.name}: {a.books.count()}" for a in authors))


def rename_one(request: HttpRequest) -> HttpResponse:
    book = Book.objects.filter(published=True).order_by("pk")[0]
    book.title = book.title.upper()
    if request.GET.get("fixed"):
        book.save(update_fields=["title"])
    else:
        book.save()
    return HttpResponse(book.title)


def books_with_publishers(request: HttpRequest) -> HttpResponse:
    books = Book.objects.filter(published=True).select_related("author", "publisher")
    if request.GET.get("show") == "publisher":
        return HttpResponse("\n".join(f"{b.title}: {b.publisher}" for b in books))
    return HttpResponse("\n".join(f"{b.title} by {b.author.name}" for b in books))


def authors_with_books(request: HttpRequest) -> HttpResponse:
    authors = Author.objects.order_by("name")
    return HttpResponse("\n".join(a.name for a in authors if a.books.exists()))


urlpatterns = [
    path("authors-with-books/", authors_with_books),
    path("books-with-publishers/", books_with_publishers),
    path("rename-one/", rename_one),
    path("authors-books-publishers/", authors_books_publishers),
    path("authors-long-books/", authors_long_books),
    path("authors-prefetched-count/", authors_prefetched_count),
    path("books/", books, name="books"),
    path("two-singles/", two_singles),
    path("one-from-a-list/", one_from_a_list),
    path("", include("djangoscope.resources.demo.bookshop.urls")),
]
