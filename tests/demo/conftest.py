"""Fixtures for the demo bookshop: a seeded database in autocommit, as under runserver."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import pytest
from django.core.cache import caches

PROBE_MIDDLEWARE = "djangoscope.probe.middleware.ProbeMiddleware"


def probe_importable() -> bool:
    """Whether the probe's middleware imports (it is developed alongside the demo)."""
    try:
        importlib.import_module("djangoscope.probe.middleware")
    except Exception:
        return False
    return True


@pytest.fixture(autouse=True)
def _probe_or_not(settings) -> None:
    """Keep the probe in MIDDLEWARE when it imports; the demo's counts must hold either way."""
    if not probe_importable():
        settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != PROBE_MIDDLEWARE]


@pytest.fixture
def bookshop(transactional_db) -> Iterator[None]:
    """The default seed (100 books) with empty caches.

    ``transactional_db``, not ``db``: pages run in autocommit, as under runserver, so the
    BEGIN / SAVEPOINT / COMMIT statements they log are the ones ``PAGES`` counts.
    """
    from djangoscope.resources.demo.bookshop.seed import seed

    seed()
    for cache in caches.all():
        cache.clear()
    yield
    for cache in caches.all():
        cache.clear()


@pytest.fixture
def demo_server(bookshop) -> Iterator[str]:
    """A real HTTP server on a free port, serving the seeded demo; yields its base URL.

    Django's own ``LiveServerThread``, started here rather than through pytest-django's
    session-wide ``live_server``, so it loads the MIDDLEWARE this test has (see ``_probe_or_not``).
    """
    from django.db import connections
    from django.test.testcases import LiveServerThread

    connection = connections["default"]
    # An in-memory SQLite test database exists only in this connection: share it.
    shared = {"default": connection} if connection.vendor == "sqlite" else {}
    for conn in shared.values():
        conn.inc_thread_sharing()
    thread = LiveServerThread("127.0.0.1", lambda handler: handler, connections_override=shared)
    thread.daemon = True
    thread.start()
    thread.is_ready.wait()
    try:
        if thread.error:
            raise thread.error
        yield f"http://127.0.0.1:{thread.port}"
    finally:
        thread.terminate()
        for conn in shared.values():
            conn.dec_thread_sharing()
