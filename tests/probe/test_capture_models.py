"""Instance counting: a wrapper around Model.__init__ (not a post_init receiver)."""

from __future__ import annotations

import inspect

from django.db.models import Model
from django.db.models.signals import post_init

from djangoscope.probe.capture import models
from djangoscope.resources.demo.bookshop.models import Book, Publisher, Tag


def test_counts_match_post_init(recording, books):
    sent: list[type] = []

    def receiver(sender, **kwargs):
        sent.append(sender)

    post_init.connect(receiver, weak=False)
    try:
        with recording() as unit:
            list(Book.objects.select_related("author", "publisher"))
            Tag(name="unsaved")
            Publisher.objects.create(name="New", country="FR")
            list(Publisher.objects.prefetch_related("books"))
    finally:
        post_init.disconnect(receiver)
    expected: dict[str, int] = {}
    for model in sent:
        expected[model._meta.label] = expected.get(model._meta.label, 0) + 1
    assert unit.instances == expected
    assert unit.to_message()["instances"] == expected


def test_outside_a_unit_nothing_is_counted_and_init_is_unchanged(installed, books):
    assert getattr(Model.__init__, "__djangoscope__", False)
    assert str(inspect.signature(Book)) == "(*args, **kwargs)"  # as Django's own __init__
    book = Book(title="x", isbn="1")  # no unit: no error, nothing to count into
    assert book.title == "x"


def test_uninstall_restores_and_install_is_idempotent(installed):
    wrapped = Model.__dict__["__init__"]
    models.install()
    assert Model.__dict__["__init__"] is wrapped
    models.uninstall()
    try:
        assert not getattr(Model.__dict__["__init__"], "__djangoscope__", False)
        assert Model.__dict__["__init__"] is wrapped.__wrapped__
    finally:
        models.install()
    assert getattr(Model.__dict__["__init__"], "__djangoscope__", False)
