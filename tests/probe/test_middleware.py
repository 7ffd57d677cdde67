"""The middleware in-process: activation rules, request facts, and never breaking the app."""

from __future__ import annotations

import logging

import pytest
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpResponse
from django.test import override_settings

from djangoscope.probe import middleware, recorder
from djangoscope.probe.middleware import ProbeMiddleware


@pytest.fixture(autouse=True)
def fresh_refusal_flag(monkeypatch):
    monkeypatch.setattr(middleware, "_refusal_logged", False)


def test_refuses_without_debug_and_says_so_once(caplog):
    with override_settings(DEBUG=False), caplog.at_level(logging.WARNING, "djangoscope.probe"):
        for _ in range(3):
            with pytest.raises(MiddlewareNotUsed):
                ProbeMiddleware(lambda r: HttpResponse())
    warnings = [r for r in caplog.records if "DEBUG is False" in r.getMessage()]
    assert len(warnings) == 1
    assert "ALLOW_WITHOUT_DEBUG" in warnings[0].getMessage()


def test_runs_without_debug_when_allowed():
    with override_settings(DEBUG=False, DJANGOSCOPE={"ALLOW_WITHOUT_DEBUG": True}):
        ProbeMiddleware(lambda r: HttpResponse())


def test_disabled_by_setting():
    with override_settings(DJANGOSCOPE={"ENABLED": False}), pytest.raises(MiddlewareNotUsed):
        ProbeMiddleware(lambda r: HttpResponse())


def test_bad_setting_disables_with_an_error_log(caplog):
    with override_settings(DJANGOSCOPE={"NOPE": 1}), pytest.raises(MiddlewareNotUsed):
        ProbeMiddleware(lambda r: HttpResponse())
    assert "unknown DJANGOSCOPE key(s): NOPE" in caplog.text


@pytest.mark.django_db
def test_records_request_facts(client):
    from djangoscope.resources.demo.bookshop.seed import seed

    seed(books=5)
    with recorder.collect() as units:
        response = client.get("/books/?page=1")
    assert response.status_code == 200
    (unit,) = units
    message = unit.to_message()
    assert message["request"]["method"] == "GET"
    assert message["request"]["path"] == "/books/"
    assert message["request"]["query_string"] == "page=1"
    assert message["request"]["route"] == "books/"
    assert message["request"]["view"]
    assert message["response"]["status"] == 200
    assert message["response"]["bytes"] == len(response.content)
    assert message["response"]["content_type"].startswith("text/html")
    assert message["duration_ns"] > 0 and message["cpu_ns"] > 0
    assert message["spans"][0]["kind"] == "request"
    assert len(message["queries"]) == 6


@pytest.mark.django_db
def test_unhandled_exception_is_recorded_and_still_raised(client):
    client.raise_request_exception = False
    with recorder.collect() as units:
        response = client.get("/error/")
    assert response.status_code == 500
    exception = units[0].exception
    assert exception is not None and exception["type"]
    assert "Traceback" in exception["traceback"]


def test_ignored_paths_are_not_recorded(client):
    with recorder.collect() as units:
        client.get("/favicon.ico")
    assert units == []


def test_a_broken_listener_never_reaches_the_app(client, db):
    def broken(unit):
        raise RuntimeError("probe bug")

    recorder.add_listener(broken)
    try:
        assert client.get("/books/fixed/").status_code == 200
    finally:
        recorder.remove_listener(broken)
