"""Per-request counts of model instances created (``post_init``), by model label.

Every instance counts: rows loaded by querysets, ``select_related`` joins, prefetches and
objects built in code. Connected once, process-wide; outside a unit it costs one ContextVar read
per instance.
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_init

from ..recorder import current_unit
from . import note_error

DISPATCH_UID = "djangoscope.probe.instances"


def _on_post_init(sender: Any, **kwargs: Any) -> None:
    unit = current_unit.get()
    if unit is None:
        return
    try:
        unit.count_instance(sender._meta.label)
    except Exception:
        note_error("models")


def install() -> None:
    post_init.connect(_on_post_init, weak=False, dispatch_uid=DISPATCH_UID)


def uninstall() -> None:
    post_init.disconnect(dispatch_uid=DISPATCH_UID)
