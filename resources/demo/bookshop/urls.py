"""URLs of the demo bookshop; ``djangoscope.resources.demo.pages.PAGES`` lists the same paths."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "bookshop"

urlpatterns = [
    path("", views.index, name="index"),
    path("books/", views.book_list, name="books"),
    path("books/fixed/", views.book_list_fixed, name="books_fixed"),
    path("books/tags/", views.book_tags, name="book_tags"),
    path("books/tags/fixed/", views.book_tags_fixed, name="book_tags_fixed"),
    path("catalogue/", views.catalogue, name="catalogue"),
    path("catalogue/fixed/", views.catalogue_fixed, name="catalogue_fixed"),
    path("authors/", views.author_list, name="authors"),
    path("authors/fixed/", views.author_list_fixed, name="authors_fixed"),
    path("books/touch/", views.touch_books, name="books_touch"),
    path("books/touch/fixed/", views.touch_books_fixed, name="books_touch_fixed"),
    path("reviews/add/", views.import_reviews, name="reviews_add"),
    path("reviews/add/fixed/", views.import_reviews_fixed, name="reviews_add_fixed"),
    path("stats/", views.stats, name="stats"),
    path("stats/fixed/", views.stats_fixed, name="stats_fixed"),
    path("slow-cache/", views.slow_cache, name="slow_cache"),
    path("slow-cache/fixed/", views.slow_cache_fixed, name="slow_cache_fixed"),
    path("visit/", views.visit, name="visit"),
    path("api/books/", views.api_books, name="api_books"),
    path("api/cache/", views.api_cache, name="api_cache"),
    path("many/", views.stock_check, name="many"),
    path("many/fixed/", views.stock_check_fixed, name="many_fixed"),
    path("raw/", views.raw_sql, name="raw"),
    path("error/", views.error, name="error"),
]
