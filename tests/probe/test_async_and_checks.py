"""ASGI: the middleware in async mode keeps concurrent requests apart; and the system checks."""

from __future__ import annotations

import asyncio

import pytest
from django.core.checks import run_checks
from django.test import AsyncClient, override_settings

from djangoscope.probe import recorder
from djangoscope.probe.checks import MIDDLEWARE_PATH


@pytest.fixture
def seeded(transactional_db):
    from djangoscope.resources.demo.bookshop.seed import seed

    seed(books=10)


def test_async_requests_run_concurrently_and_stay_apart(seeded):
    async def main():
        client = AsyncClient()
        return await asyncio.gather(
            client.get("/api/books/"), client.get("/api/cache/"), client.get("/books/fixed/")
        )

    with recorder.collect() as units:
        responses = asyncio.run(main())
    assert [r.status_code for r in responses] == [200, 200, 200]
    by_path = {u.request["path"]: u for u in units}
    assert set(by_path) == {"/api/books/", "/api/cache/", "/books/fixed/"}
    assert all(u.is_async for u in units)
    api = by_path["/api/books/"]
    assert len(api.queries) == 2 and not api.cache
    cache = by_path["/api/cache/"]
    assert not cache.queries and {c["op"] for c in cache.cache} >= {"get", "set"}
    assert len(by_path["/books/fixed/"].queries) == 1
    message = api.to_message()
    assert message["async"] is True
    assert message["request"]["view"]
    assert [s["kind"] for s in message["spans"]][:2] == ["request", "view"]


def check_ids(**settings):
    with override_settings(**settings):
        return sorted(m.id for m in run_checks() if m.id.startswith("djangoscope"))


def test_checks_are_quiet_when_configured_well():
    assert check_ids() == []


def test_check_missing_middleware():
    assert check_ids(MIDDLEWARE=["django.middleware.common.CommonMiddleware"]) == [
        "djangoscope.W001"
    ]


def test_check_middleware_not_first():
    middleware = ["django.middleware.common.CommonMiddleware", MIDDLEWARE_PATH]
    assert check_ids(MIDDLEWARE=middleware) == ["djangoscope.W002"]


def test_check_debug_false():
    assert check_ids(DEBUG=False) == ["djangoscope.W003"]
    allowed = {"ALLOW_WITHOUT_DEBUG": True}
    assert check_ids(DEBUG=False, DJANGOSCOPE=allowed) == ["djangoscope.W004"]


def test_check_bad_setting():
    assert check_ids(DJANGOSCOPE={"ADDRESS": "nowhere"}) == ["djangoscope.E001"]
    assert check_ids(DJANGOSCOPE={"TYPO": 1}) == ["djangoscope.E001"]
