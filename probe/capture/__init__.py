"""The probe's capture hooks: SQL, transactions, cache, templates, views, model instances,
queryset creation sites.

The middleware calls :func:`install` once when it activates and :func:`ensure_installed` at the
start of every request (it attaches the SQL wrapper to connections, and the cache wrappers to
cache backends, created in this thread before :func:`install` ran). Every hook is a no-op costing
one ContextVar read when no unit of work is current, so hooks stay installed between requests.

Hooks never raise into the application: their own failures are swallowed and counted in
:data:`errors` (reported in the probe's STATS); the database's and cache's own exceptions pass
through unchanged.
"""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger("djangoscope.probe")

#: Probe-internal failures swallowed by the hooks, by hook name.
errors: dict[str, int] = {}

_lock = threading.RLock()
_installed = False


def note_error(where: str) -> None:
    """Count a swallowed probe failure (called from inside an ``except`` block)."""
    count = errors.get(where, 0) + 1
    errors[where] = count
    if count == 1:
        logger.debug("djangoscope probe error in %s hook", where, exc_info=True)


def error_counts() -> dict[str, int]:
    """A copy of :data:`errors`."""
    return dict(errors)


def install() -> None:
    """Install every hook; idempotent and thread-safe, and re-applies a hook someone replaced."""
    global _installed
    from .. import stacks
    from ..conf import get_config
    from . import cache, models, origin, orm, sql, templates, views

    with _lock:
        config = get_config()
        stacks.configure(config)
        orm.install(config)
        sql.install()
        cache.install()
        templates.install()
        views.install()
        models.install()
        origin.install()
        _installed = True


def ensure_installed() -> None:
    """Per request: attach hooks to this thread's connections/caches made before install()."""
    if not _installed:
        return
    from . import cache, sql

    sql.ensure_installed()
    cache.ensure_installed()


def uninstall() -> None:
    """Remove every hook (this thread's connections and caches; others become no-ops)."""
    global _installed
    from . import cache, models, origin, orm, sql, templates, views

    with _lock:
        origin.uninstall()
        models.uninstall()
        views.uninstall()
        templates.uninstall()
        cache.uninstall()
        sql.uninstall()
        orm.uninstall()
        _installed = False


def is_installed() -> bool:
    return _installed
