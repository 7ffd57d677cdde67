"""The view span: wraps the callback ``BaseHandler.make_view_atomic`` returns.

``make_view_atomic`` runs once per request, after URL resolution and ``process_view``
middleware, on the exact callable the handler is about to call (already wrapped in
``atomic()`` for ``ATOMIC_REQUESTS``), for both the WSGI and the ASGI handler. The span is
named by the view's dotted path (the class for class-based views). Coroutine views get an
``async def`` wrapper, sync views a sync one, so the handler's ``iscoroutinefunction`` choice
(run in a thread or await) is unchanged.
"""

from __future__ import annotations

import functools
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.core.handlers.base import BaseHandler

from .. import recorder
from ..recorder import current_unit
from . import note_error

_originals: dict[str, Any] = {}


def view_name(view: Any) -> str:
    """Dotted path of a view callable: ``module.qualname`` (CBV: the class)."""
    target = getattr(view, "view_class", None)
    if target is None:
        target = view
        while isinstance(target, functools.partial):
            target = target.func
        target = getattr(target, "__wrapped__", None) or target
        cls = getattr(target, "view_class", None)
        if cls is not None:
            target = cls
    module = getattr(target, "__module__", None) or ""
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"{module}.{qualname}" if module else qualname


def _open(name: str) -> tuple[Any, Any]:
    unit = current_unit.get()
    if unit is None:
        return None, None
    try:
        return unit, unit.open_span(recorder.SPAN_VIEW, name)
    except Exception:
        note_error("view")
        return None, None


def _close(unit: Any, span: Any) -> None:
    if unit is not None:
        try:
            unit.close_span(span)
        except Exception:
            note_error("view")


def wrap_view(view: Any) -> Any:
    """A view-span wrapper of the same kind (sync/async) as ``view``."""
    name = view_name(view)
    if iscoroutinefunction(view):

        @functools.wraps(view)
        async def async_view(*args: Any, **kwargs: Any) -> Any:
            unit, span = _open(name)
            try:
                return await view(*args, **kwargs)
            finally:
                _close(unit, span)

        return async_view

    @functools.wraps(view)
    def sync_view(*args: Any, **kwargs: Any) -> Any:
        unit, span = _open(name)
        try:
            return view(*args, **kwargs)
        finally:
            _close(unit, span)

    return sync_view


def _make_view_atomic(self: BaseHandler, view: Any) -> Any:
    view = _originals["make_view_atomic"](self, view)
    if current_unit.get() is None:
        return view
    try:
        return wrap_view(view)
    except Exception:
        note_error("view")
        return view


_make_view_atomic.__djangoscope__ = True  # type: ignore[attr-defined]


def install() -> None:
    current = BaseHandler.__dict__["make_view_atomic"]
    if not getattr(current, "__djangoscope__", False):
        _originals["make_view_atomic"] = current
        BaseHandler.make_view_atomic = _make_view_atomic  # type: ignore[method-assign]


def uninstall() -> None:
    if getattr(BaseHandler.__dict__["make_view_atomic"], "__djangoscope__", False):
        BaseHandler.make_view_atomic = _originals["make_view_atomic"]  # type: ignore[method-assign]
