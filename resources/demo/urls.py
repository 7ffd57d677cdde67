"""Root URLconf of the demo project: the bookshop at the site root, the admin and its twin."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from djangoscope.resources.demo.bookshop.admin import fixed_site

urlpatterns = [
    path("admin/", admin.site.urls),
    path("admin-fixed/", fixed_site.urls),
    path("", include("djangoscope.resources.demo.bookshop.urls")),
]
