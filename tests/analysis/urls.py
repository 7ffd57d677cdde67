"""A URLconf whose /books/ page can be "fixed" between requests, as an edit + autoreload would."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.urls import include, path

from djangoscope.resources.demo.bookshop.models import Book

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


urlpatterns = [
    path("books/", books, name="books"),
    path("two-singles/", two_singles),
    path("one-from-a-list/", one_from_a_list),
    path("", include("djangoscope.resources.demo.bookshop.urls")),
]
