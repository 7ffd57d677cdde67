"""Template render spans and template-line attribution of queries; view spans."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction
from django.core.handlers.base import BaseHandler
from django.http import HttpResponse
from django.template import engines
from django.template.base import Origin, Template
from django.template.engine import Engine
from django.test import RequestFactory

from djangoscope.probe import recorder
from djangoscope.probe.capture import templates as template_capture
from djangoscope.probe.capture import views as view_capture
from djangoscope.resources.demo.bookshop.models import Book

LIST = """<ul>
{% for book in books %}
  <li>{{ book.title }}
      by {{ book.author.name }}</li>
{% endfor %}
</ul>
"""

PAGES = {
    "base.html": "<main>{% block body %}{% endblock %}</main>\n",
    "list.html": '{% extends "base.html" %}\n{% block body %}\n'
    '{% include "row.html" %}{% include "row.html" %}\n{% endblock %}\n',
    "row.html": "row {{ n }}\n",
}


def template_spans(unit):
    return [s for s in unit.spans if s.kind == recorder.SPAN_TEMPLATE]


@pytest.fixture
def engine():
    return Engine(loaders=[("django.template.loaders.locmem.Loader", PAGES)], debug=True)


@pytest.mark.django_db
def test_query_fired_from_a_template_line_is_attributed(recording, books):
    template = engines["django"].from_string(LIST)
    queryset = Book.objects.order_by("id")
    with recording() as unit:
        html = template.render({"books": queryset})
    assert "by Ann" in html
    author_queries = [q for q in unit.queries if q["orm"] and q["orm"]["op"] == "fk"]
    assert len(author_queries) == 3  # the N+1
    for query in author_queries:
        assert query["template"] == {"name": "<string>", "line": 4, "path": None}
    # The root queryset is evaluated by the {% for %} tag on line 2.
    root = unit.queries[0]
    assert root["orm"] == {"op": "fetch", "model": "bookshop.Book", "site": None}  # built outside
    assert root["template"]["line"] == 2


@pytest.mark.django_db
def test_template_attribution_with_a_named_template(recording, books):
    origin = Origin(name="/srv/app/templates/books/list.html", template_name="books/list.html")
    template = Template(LIST, origin=origin, engine=Engine(debug=True))
    from django.template import Context

    with recording() as unit:
        template.render(Context({"books": Book.objects.all()}))
    fired = [q["template"] for q in unit.queries if q["orm"] and q["orm"]["op"] == "fk"]
    assert (
        fired
        == [{"name": "books/list.html", "line": 4, "path": "/srv/app/templates/books/list.html"}]
        * 3
    )
    (span,) = template_spans(unit)
    assert span.name == "books/list.html"


@pytest.mark.django_db
def test_queries_outside_templates_have_no_template(recording, books):
    with recording() as unit:
        list(Book.objects.all())
    assert unit.queries[0]["template"] is None


def test_spans_nest_through_extends_and_include(recording, engine):
    with recording() as unit:
        html = engine.get_template("list.html").render(engine_context({"n": 1}))
    assert html.count("row 1") == 2
    spans = template_spans(unit)
    assert [s.name for s in spans] == ["list.html", "base.html", "row.html", "row.html"]
    by_id = {s.id: s for s in unit.spans}
    list_span, base_span, row1, row2 = spans
    assert list_span.parent == unit.root.id
    assert base_span.parent == list_span.id  # {% extends %} renders the parent inside
    assert row1.parent == base_span.id == row2.parent  # includes render in the parent's block
    assert all(s.duration_ns is not None and s.duration_ns >= 0 for s in spans)
    assert unit.open_span_id == unit.root.id  # every span closed
    assert by_id[row1.id].start_ns >= base_span.start_ns


def engine_context(values):
    from django.template import Context

    return Context(values)


def test_string_templates_and_no_unit(recording):
    template = engines["django"].from_string("hi {{ x }}")
    assert template.render({"x": 1}) == "hi 1"  # outside a unit: nothing to record into
    with recording() as unit:
        template.render({"x": 2})
    assert [s.name for s in template_spans(unit)] == ["<string>"]
    assert template_capture.template_name(Template("x")) == "<string>"


def test_span_closed_when_rendering_raises(recording, engine):
    broken = Template("{% for x in items %}{{ x.boom }}{% endfor %}", engine=engine)

    class Boom:
        @property
        def boom(self):
            raise KeyError("nope")

    with recording() as unit, pytest.raises(KeyError):
        broken.render(engine_context({"items": [Boom()]}))
    (span,) = template_spans(unit)
    assert span.duration_ns is not None
    assert unit.open_span_id == unit.root.id


# -- view spans --------------------------------------------------------------------------------


def sync_view(request):
    return HttpResponse("sync")


async def async_view(request):
    await asyncio.sleep(0)
    return HttpResponse("async")


def test_sync_view_span(recording):
    handler = BaseHandler()
    request = RequestFactory().get("/")
    with recording() as unit:
        callback = handler.make_view_atomic(sync_view)
        assert not iscoroutinefunction(callback)
        assert callback(request).content == b"sync"
    (span,) = [s for s in unit.spans if s.kind == recorder.SPAN_VIEW]
    assert span.name == f"{__name__}.sync_view"
    assert span.parent == unit.root.id
    assert span.duration_ns is not None


def test_async_view_span_keeps_it_a_coroutine_function(recording):
    handler = BaseHandler()
    request = RequestFactory().get("/")
    with recording() as unit:
        callback = handler.make_view_atomic(async_view)
        assert iscoroutinefunction(callback)
        assert async_to_sync(callback)(request).content == b"async"
    (span,) = [s for s in unit.spans if s.kind == recorder.SPAN_VIEW]
    assert span.name == f"{__name__}.async_view"
    assert span.duration_ns is not None


def test_view_untouched_outside_a_unit(installed):
    assert BaseHandler().make_view_atomic(sync_view) is sync_view


def test_class_based_view_name():
    from django.views.generic import TemplateView

    class Page(TemplateView):
        template_name = "x.html"

    assert view_capture.view_name(Page.as_view()) == f"{__name__}.{Page.__qualname__}"
