"""The probe's settings: one accessor, read once, reset when tests change settings.

Users configure the probe with a ``DJANGOSCOPE`` dict in settings (every key optional) and two
environment variables that win over it: ``DJANGOSCOPE_ADDRESS`` and ``DJANGOSCOPE_TOKEN``.
``docs/probe.md`` documents every key; keep it in step with ``DEFAULTS``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from . import wire

#: Column names whose bound values are replaced by ``REDACTED`` before anything leaves the process.
DEFAULT_SENSITIVE = (
    r"pass(word|wd)?|secret|token|api_?key|private|auth|session|cookie|csrf|credit|card|cvv|"
    r"ssn|iban|signature|salt|otp|pin\b"
)

REDACTED = "[redacted]"

DEFAULTS: dict[str, Any] = {
    # Master switch: False turns the middleware into a no-op (it removes itself).
    "ENABLED": True,
    # The probe refuses to run when DEBUG is False unless this is True.
    "ALLOW_WITHOUT_DEBUG": False,
    # Where the collector listens (host:port); DJANGOSCOPE_ADDRESS overrides it.
    "ADDRESS": wire.DEFAULT_ADDRESS,
    # Token proof for the collector; None reads DJANGOSCOPE_TOKEN, then the collector's token file.
    "TOKEN": None,
    # Name this process reports (defaults to the settings module's package).
    "PROJECT": None,
    # Bytes of finished requests kept while the collector is away or slow; oldest dropped first.
    "BUFFER_BYTES": 8 * 1024 * 1024,
    # Seconds the process waits at exit for buffered requests to reach the collector.
    "FLUSH_TIMEOUT": 2.0,
    # Longest a finished request waits for a quiet moment (no request running in this process)
    # before the sender serializes and ships it anyway.
    "SEND_DELAY": 2.0,
    # Capture SQL parameters at all (redaction applies on top).
    "CAPTURE_PARAMS": True,
    # Regex (case-insensitive) matched against the column a parameter is bound to.
    "SENSITIVE_PARAMS": DEFAULT_SENSITIVE,
    # Longest captured parameter text; longer values are cut with an ellipsis.
    "MAX_PARAM_LENGTH": 200,
    # Most frames kept per call stack.
    "STACK_DEPTH": 40,
    # Extra path prefixes that count as your code (frames there are "app" frames) ...
    "APP_PATHS": [],
    # ... and extra prefixes that count as library code.
    "LIBRARY_PATHS": [],
    # Regexes of request paths not recorded at all (matched with re.search).
    "IGNORE_PATHS": [r"^/favicon\.ico$"],
    # Per-request caps; past them records are counted in "truncated" instead of kept.
    "MAX_QUERIES": 20000,
    "MAX_CACHE_CALLS": 20000,
    "MAX_SPANS": 50000,
}


@dataclass(frozen=True)
class ProbeConfig:
    enabled: bool
    allow_without_debug: bool
    address: str
    token: str | None
    project: str | None
    buffer_bytes: int
    flush_timeout: float
    send_delay: float
    capture_params: bool
    sensitive: re.Pattern[str]
    max_param_length: int
    stack_depth: int
    app_paths: tuple[str, ...]
    library_paths: tuple[str, ...]
    ignore_paths: tuple[re.Pattern[str], ...]
    limits: dict[str, int] = field(default_factory=dict)

    def ignores(self, path: str) -> bool:
        return any(pattern.search(path) for pattern in self.ignore_paths)


class ConfigError(ValueError):
    """A DJANGOSCOPE setting has a wrong type or value; the message names it."""


def _user_settings() -> dict[str, Any]:
    from django.conf import settings

    value = getattr(settings, "DJANGOSCOPE", None) or {}
    if not isinstance(value, dict):
        raise ConfigError("settings.DJANGOSCOPE must be a dict")
    unknown = set(value) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown DJANGOSCOPE key(s): {', '.join(sorted(unknown))}")
    return value


@lru_cache(maxsize=1)
def get_config() -> ProbeConfig:
    """The effective probe configuration (cached; ``reset()`` clears it)."""
    merged = {**DEFAULTS, **_user_settings()}
    address = os.environ.get("DJANGOSCOPE_ADDRESS") or merged["ADDRESS"]
    try:
        wire.parse_address(address)
    except ValueError as exc:
        raise ConfigError(f"DJANGOSCOPE ADDRESS: {exc}") from None
    try:
        sensitive = re.compile(merged["SENSITIVE_PARAMS"], re.IGNORECASE)
        ignore = tuple(re.compile(p) for p in merged["IGNORE_PATHS"])
    except re.error as exc:
        raise ConfigError(f"DJANGOSCOPE regex: {exc}") from None
    return ProbeConfig(
        enabled=bool(merged["ENABLED"]),
        allow_without_debug=bool(merged["ALLOW_WITHOUT_DEBUG"]),
        address=address,
        token=os.environ.get("DJANGOSCOPE_TOKEN") or merged["TOKEN"],
        project=merged["PROJECT"],
        buffer_bytes=int(merged["BUFFER_BYTES"]),
        flush_timeout=float(merged["FLUSH_TIMEOUT"]),
        send_delay=max(0.0, float(merged["SEND_DELAY"])),
        capture_params=bool(merged["CAPTURE_PARAMS"]),
        sensitive=sensitive,
        max_param_length=int(merged["MAX_PARAM_LENGTH"]),
        stack_depth=int(merged["STACK_DEPTH"]),
        app_paths=tuple(os.path.abspath(p) for p in merged["APP_PATHS"]),
        library_paths=tuple(os.path.abspath(p) for p in merged["LIBRARY_PATHS"]),
        ignore_paths=ignore,
        limits={
            "queries": int(merged["MAX_QUERIES"]),
            "cache": int(merged["MAX_CACHE_CALLS"]),
            "spans": int(merged["MAX_SPANS"]),
        },
    )


def reset(**kwargs: Any) -> None:
    """Forget the cached configuration (connected to ``setting_changed``)."""
    setting = kwargs.get("setting")
    if setting is None or setting in ("DJANGOSCOPE", "DEBUG"):
        get_config.cache_clear()
