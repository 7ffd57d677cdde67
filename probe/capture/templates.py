"""Template render spans: one span per ``Template._render`` while a unit is current.

``Template._render`` runs for the top template, every ``{% include %}`` and the parent of every
``{% extends %}``, so the spans nest the way the page was built. The span is named by the
template's loader name (``books/list.html``), its ``name``, or ``"<string>"`` for templates made
with ``from_string``. Queries fired while rendering also carry the node's template and line
(see :mod:`djangoscope.probe.stacks`).
"""

from __future__ import annotations

from typing import Any

from django.template.base import UNKNOWN_SOURCE, Template

from .. import recorder
from ..recorder import current_unit
from . import note_error

_originals: dict[str, Any] = {}


def template_name(template: Any) -> str:
    """The name a template span carries."""
    origin = getattr(template, "origin", None)
    name = getattr(origin, "template_name", None) or getattr(template, "name", None)
    if name:
        return str(name)
    origin_name = getattr(origin, "name", None)
    if origin_name and origin_name != UNKNOWN_SOURCE:
        return str(origin_name)
    return "<string>"


def _wrap(original: Any) -> Any:
    def _render(self: Template, context: Any) -> Any:
        unit = current_unit.get()
        if unit is None:
            return original(self, context)
        span = None
        try:
            span = unit.open_span(recorder.SPAN_TEMPLATE, template_name(self))
        except Exception:
            note_error("template")
        try:
            return original(self, context)
        finally:
            try:
                unit.close_span(span)
            except Exception:
                note_error("template")

    _render.__djangoscope__ = True  # type: ignore[attr-defined]
    _render.__wrapped__ = original  # type: ignore[attr-defined]
    return _render


def install() -> None:
    """Wrap whatever ``Template._render`` is now (Django's test runner swaps it too)."""
    current = Template.__dict__["_render"]
    if not getattr(current, "__djangoscope__", False):
        _originals["_render"] = current
        Template._render = _wrap(current)  # type: ignore[method-assign]


def uninstall() -> None:
    current = Template.__dict__["_render"]
    if getattr(current, "__djangoscope__", False):
        Template._render = current.__wrapped__  # type: ignore[method-assign]
