"""``manage.py seed_bookshop [--books N] [--reset]``: fill the demo database."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from djangoscope.resources.demo.bookshop.seed import DEFAULT_BOOKS, seed


class Command(BaseCommand):
    help = (
        "Fill the demo bookshop with deterministic data. Does nothing if books already exist, "
        "unless --reset is given. The demo pages' query counts assume the default 100 books."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--books",
            type=int,
            default=DEFAULT_BOOKS,
            help=f"number of books to create (default {DEFAULT_BOOKS})",
        )
        parser.add_argument(
            "--reset", action="store_true", help="delete every bookshop row first, then seed"
        )

    def handle(self, *args: Any, books: int, reset: bool, **options: Any) -> None:
        if books < 0:
            raise CommandError("--books must be >= 0")
        result = seed(books=books, reset=reset)
        summary = (
            f"{result.books} books, {result.authors} authors, {result.publishers} publishers, "
            f"{result.tags} tags, {result.reviews} reviews"
        )
        if result.created:
            self.stdout.write(self.style.SUCCESS(f"Seeded the bookshop: {summary}."))
        else:
            self.stdout.write(f"Already seeded ({summary}); use --reset to start over.")
