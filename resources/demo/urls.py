"""Root URLconf of the demo project: the bookshop at the site root."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [
    path("", include("djangoscope.resources.demo.bookshop.urls")),
]
