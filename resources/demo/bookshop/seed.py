"""Deterministic demo data: the same rows, ids aside, on every machine and every run.

The query counts of the demo pages (see ``djangoscope.resources.demo.pages``) are exact for
the default ``seed(books=100)``: 10 publishers, 20 authors each with a profile, 12 tags, 100
published books (5 per author, 2-3 tags each, 10 without a publisher) and 1-3 reviews per book.
"""

from __future__ import annotations

import datetime
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar

from django.db import models, transaction

from .models import Author, AuthorProfile, Book, Publisher, Review, Tag, Visit

M = TypeVar("M", bound=models.Model)

DEFAULT_BOOKS = 100
RANDOM_SEED = 20120719  # the day of the talk

PUBLISHERS = [
    ("Harbour Press", "UK"),
    ("Northwind Books", "US"),
    ("Quill & Ink", "IE"),
    ("Blue Fjord", "NO"),
    ("Lanterna", "IT"),
    ("Maple Leaf Editions", "CA"),
    ("Southern Cross", "AU"),
    ("Editions du Pont", "FR"),
    ("Tidewater", "US"),
    ("Kestrel House", "UK"),
]
FIRST_NAMES = [
    "Ada",
    "Brian",
    "Carmen",
    "Dmitri",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
]
LAST_NAMES = ["Okafor", "Lindqvist", "Moreau", "Tanaka", "Alvarez", "Novak", "Reyes", "Byrne"]
TAGS = [
    "classic",
    "crime",
    "essays",
    "fantasy",
    "history",
    "humour",
    "poetry",
    "romance",
    "science",
    "short stories",
    "thriller",
    "travel",
]
ADJECTIVES = ["Silent", "Crimson", "Hidden", "Last", "Winter", "Golden", "Broken", "Distant"]
NOUNS = ["Harbour", "Garden", "Letters", "Orchard", "Lighthouse", "Archive", "River", "Atlas"]
REVIEWERS = ["maria", "tom", "yuki", "omar", "lena", "paulo", "sven", "amina", "li", "kofi"]
AUTHORS = 20


@dataclass(frozen=True)
class SeedResult:
    """What ``seed`` left in the database, and whether it wrote anything."""

    created: bool
    publishers: int
    authors: int
    tags: int
    books: int
    reviews: int


def isbn_for(index: int) -> str:
    """A valid ISBN-13 for the ``index``-th book, so lookups by ISBN are reproducible."""
    body = f"978{index:09d}"
    total = sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


def _counts() -> dict[str, int]:
    return {
        "publishers": Publisher.objects.count(),
        "authors": Author.objects.count(),
        "tags": Tag.objects.count(),
        "books": Book.objects.count(),
        "reviews": Review.objects.count(),
    }


def _bulk_create(model: type[M], objs: list[M]) -> list[M]:
    created = model._default_manager.bulk_create(objs)
    if created and created[0].pk is None:
        # A backend (or an old SQLite) that cannot return ids from a bulk insert: the table was
        # empty, so the newest rows are ours, in insertion order.
        created = list(model._default_manager.order_by("-pk")[: len(created)])[::-1]
    return created


def wipe() -> None:
    """Delete every bookshop row (children first, so no cascade has to collect anything)."""
    with transaction.atomic():
        for model in (
            Visit,
            Review,
            Book.tags.through,
            Book,
            Tag,
            AuthorProfile,
            Author,
            Publisher,
        ):
            model.objects.all().delete()


@transaction.atomic
def seed(books: int = DEFAULT_BOOKS, *, reset: bool = False) -> SeedResult:
    """Fill an empty database with the demo bookshop; a no-op when books already exist.

    ``reset=True`` wipes the bookshop tables first, so the result is exactly ``books`` books.
    """
    if books < 0:
        raise ValueError("books must be >= 0")
    if reset:
        wipe()
    elif Book.objects.exists():
        return SeedResult(created=False, **_counts())

    rng = random.Random(RANDOM_SEED)

    publishers = _bulk_create(
        Publisher, [Publisher(name=name, country=country) for name, country in PUBLISHERS]
    )
    authors = _bulk_create(
        Author,
        [
            Author(
                name=f"{FIRST_NAMES[i % len(FIRST_NAMES)]} {LAST_NAMES[i % len(LAST_NAMES)]}",
                email=f"author{i:02d}@example.com",
                bio=f"Writes about {TAGS[i % len(TAGS)]}.",
            )
            for i in range(AUTHORS)
        ],
    )
    AuthorProfile.objects.bulk_create(
        [
            AuthorProfile(
                author=author,
                website=f"https://example.com/authors/{i:02d}/",
                twitter=f"@author{i:02d}",
            )
            for i, author in enumerate(authors)
        ]
    )
    tags = _bulk_create(Tag, [Tag(name=name) for name in TAGS])

    first_day = datetime.date(2012, 7, 19)
    new_books = [
        Book(
            title=f"The {ADJECTIVES[i % len(ADJECTIVES)]} {NOUNS[(i // 8) % len(NOUNS)]}"
            + (f" {i // 64 + 1}" if i >= 64 else ""),
            isbn=isbn_for(i),
            author=authors[i % AUTHORS],
            # Every tenth book is self-published: the nullable FK has real NULLs.
            publisher=None if i % 10 == 9 else publishers[rng.randrange(len(publishers))],
            pages=rng.randint(90, 900),
            price=Decimal(rng.randint(499, 4999)) / 100,
            published=True,
            published_on=None if i % 7 == 6 else first_day + datetime.timedelta(days=11 * i),
            views=rng.randint(0, 5000),
            summary=f"Book {i + 1} of the demo shop. " * 3,
        )
        for i in range(books)
    ]
    new_books = _bulk_create(Book, new_books)

    Through = Book.tags.through
    Through.objects.bulk_create(
        [
            Through(book_id=book.pk, tag_id=tag.pk)
            for book in new_books
            for tag in rng.sample(tags, rng.randint(2, 3))
        ]
    )
    Review.objects.bulk_create(
        [
            Review(
                book=book,
                reviewer=rng.choice(REVIEWERS),
                rating=rng.randint(1, 5),
                body=rng.choice(["Loved it.", "Slow start, great ending.", "Not for me."]),
            )
            for book in new_books
            for _ in range(rng.randint(1, 3))
        ]
    )
    return SeedResult(created=True, **_counts())
