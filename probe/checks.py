"""System checks (``manage.py check``) for a probe that would silently record nothing."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from . import conf

MIDDLEWARE_PATH = "djangoscope.probe.middleware.ProbeMiddleware"


@register(Tags.compatibility)
def check_probe(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    messages: list[Any] = []
    try:
        config = conf.get_config()
    except conf.ConfigError as exc:
        return [
            Error(
                f"Invalid DJANGOSCOPE setting: {exc}",
                hint="See docs/probe.md for the keys and their types.",
                id="djangoscope.E001",
            )
        ]
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if MIDDLEWARE_PATH not in middleware:
        messages.append(
            Warning(
                "djangoscope.probe is installed but ProbeMiddleware is not in MIDDLEWARE, so "
                "nothing is recorded.",
                hint=f'Add "{MIDDLEWARE_PATH}" as the first entry of MIDDLEWARE.',
                id="djangoscope.W001",
            )
        )
    elif middleware.index(MIDDLEWARE_PATH) != 0:
        before = middleware[: middleware.index(MIDDLEWARE_PATH)]
        messages.append(
            Warning(
                "ProbeMiddleware is not first in MIDDLEWARE: time and queries spent in "
                f"{', '.join(m.rsplit('.', 1)[-1] for m in before)} are not recorded.",
                hint="Move it to the top of MIDDLEWARE to record the whole request.",
                id="djangoscope.W002",
            )
        )
    if config.enabled and not settings.DEBUG and not config.allow_without_debug:
        messages.append(
            Warning(
                "DEBUG is False, so the djangoscope probe stays off.",
                hint="The probe records SQL parameters and stacks; to run it without DEBUG set "
                "DJANGOSCOPE = {'ALLOW_WITHOUT_DEBUG': True}.",
                id="djangoscope.W003",
            )
        )
    if config.allow_without_debug and not settings.DEBUG:
        messages.append(
            Warning(
                "The djangoscope probe runs with DEBUG = False (ALLOW_WITHOUT_DEBUG).",
                hint="Never enable this in production: queries, parameters and stacks leave the "
                "process.",
                id="djangoscope.W004",
            )
        )
    return messages
