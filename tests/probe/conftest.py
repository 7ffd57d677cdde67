"""Fixtures for the capture-hook tests: hooks installed, and a unit of work to record into."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from djangoscope.probe import capture, recorder
from djangoscope.probe.recorder import Unit, current_unit


@contextlib.contextmanager
def _recording() -> Iterator[Unit]:
    unit = Unit()
    token = current_unit.set(unit)
    try:
        yield unit
    finally:
        current_unit.reset(token)
        # Never finished (tests read it as it was), yet no longer a request in progress: left
        # in recorder._running until the cyclic GC ran, it held the sender's quiet moment off.
        recorder._running.discard(unit)


@pytest.fixture(autouse=True)
def no_unit_left_running() -> Iterator[None]:
    """Units a test dropped unfinished, in a reference cycle with its frame (a stack memo
    holds the frames that ran its queries), count as requests in progress until the cyclic GC
    runs, and hold the sender's quiet moment off in a later test: collect them."""
    yield
    if recorder.running():
        gc.collect()


@pytest.fixture
def installed() -> Iterator[None]:
    """Every capture hook installed (they stay installed: outside a unit they are no-ops)."""
    capture.install()
    capture.ensure_installed()
    yield


@pytest.fixture
def recording(installed) -> Callable[[], Any]:
    """``with recording() as unit:`` records everything run inside into ``unit``."""
    return _recording


@pytest.fixture
def books(db) -> dict[str, Any]:
    """A small bookshop: 2 authors (one with a profile), 3 books, tags, reviews."""
    from djangoscope.resources.demo.bookshop.models import (
        Author,
        AuthorProfile,
        Book,
        Publisher,
        Review,
        Tag,
    )

    pub = Publisher.objects.create(name="Penguin", country="UK")
    ann = Author.objects.create(name="Ann", email="ann@example.com")
    bob = Author.objects.create(name="Bob", email="bob@example.com")
    AuthorProfile.objects.create(author=ann, website="https://ann.example.com")
    red, blue = Tag.objects.create(name="red"), Tag.objects.create(name="blue")
    b1 = Book.objects.create(title="One", isbn="111", author=ann, publisher=pub)
    b2 = Book.objects.create(title="Two", isbn="222", author=ann)
    b3 = Book.objects.create(title="Three", isbn="333", author=bob, publisher=pub)
    b1.tags.add(red, blue)
    b2.tags.add(red)
    Review.objects.create(book=b1, reviewer="x", rating=5)
    Review.objects.create(book=b1, reviewer="y", rating=3)
    return {"ann": ann, "bob": bob, "pub": pub, "books": [b1, b2, b3], "tags": [red, blue]}
