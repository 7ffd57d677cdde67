"""The admin changelist N+1, and its fix on a second admin site.

``/admin/bookshop/book/`` shows each book's author and publisher through display methods, so
Django's automatic ``select_related()`` (only for foreign keys named in ``list_display``) does
not apply: 2 queries per row. ``/admin-fixed/bookshop/book/`` is the same list with the fix
djangoscope suggests, ``list_select_related``. Log in with a staff user
(``manage.py createsuperuser``).
"""

from __future__ import annotations

from django.contrib import admin

from .models import Book

#: The admin site of the fixed twin, mounted at /admin-fixed/.
fixed_site = admin.AdminSite(name="admin_fixed")


@admin.register(Book)
class BookAdmin(admin.ModelAdmin):
    list_display = ("title", "author_name", "publisher_name", "price")
    list_per_page = 50

    @admin.display(description="author")
    def author_name(self, book: Book) -> str:
        return book.author.name

    @admin.display(description="publisher")
    def publisher_name(self, book: Book) -> str:
        return book.publisher.name if book.publisher else "-"


@admin.register(Book, site=fixed_site)
class BookAdminFixed(BookAdmin):
    list_select_related = ("author", "publisher")
