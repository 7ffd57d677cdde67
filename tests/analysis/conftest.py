"""Sessions made the real way: demo pages through the probe into a session file."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from django.test import Client

from djangoscope.app.core.store import SessionStore
from djangoscope.probe import recorder

from ..demo.conftest import bookshop  # noqa: F401  (the seeded database fixture)
from . import urls as test_urls


@pytest.fixture
def record(bookshop, tmp_path) -> Iterator[Callable[..., SessionStore]]:  # noqa: F811
    """``record("/books/", ...)``: GET each path with the probe on; the session holds them."""
    store = SessionStore.create(tmp_path / "analysis.djscope")
    process = store.add_process({"pid": 1, "project": "bookshop"}, "test")
    client = Client()

    def run(*paths: str, staff: bool = False) -> SessionStore:
        if staff:
            from django.contrib.auth.models import User

            user, _ = User.objects.get_or_create(
                username="staff", defaults={"is_staff": True, "is_superuser": True}
            )
            client.force_login(user)
        with recorder.collect() as units:
            for p in paths:
                response = client.get(p)
                assert response.status_code == 200, (p, response.status_code)
        assert len(units) == len(paths)
        for unit in units:
            store.add_unit(process, unit.to_message())
        return store

    yield run
    store.close()


@pytest.fixture
def fixable(settings) -> Iterator[dict[str, bool]]:
    """The test URLconf, with its /books/ view unfixed at the start."""
    settings.ROOT_URLCONF = "tests.analysis.urls"
    test_urls.FIXED["books"] = False
    yield test_urls.FIXED
    test_urls.FIXED["books"] = False
