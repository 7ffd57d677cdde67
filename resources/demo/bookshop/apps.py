from django.apps import AppConfig


class BookshopConfig(AppConfig):
    name = "djangoscope.resources.demo.bookshop"
    label = "bookshop"
    verbose_name = "djangoscope demo bookshop"
    default_auto_field = "django.db.models.BigAutoField"
