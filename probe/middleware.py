"""``ProbeMiddleware``: the one line a project adds to ``MIDDLEWARE``.

It opens a unit of work per request, lets the capture hooks fill it, and hands the finished unit
to the background sender. Put it first to time every other middleware; anywhere works.
Whatever goes wrong inside the probe is swallowed and counted: the host app never sees it.
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.core.signals import got_request_exception, setting_changed

from . import conf, recorder, sender

logger = logging.getLogger("djangoscope.probe")

_refusal_logged = False


def probe_allowed() -> bool:
    """Whether the probe may run in this process; logs the reason it may not, once."""
    global _refusal_logged
    try:
        config = conf.get_config()
    except conf.ConfigError as exc:
        if not _refusal_logged:
            logger.error("djangoscope probe disabled: %s", exc)
            _refusal_logged = True
        return False
    if not config.enabled:
        return False
    if not settings.DEBUG and not config.allow_without_debug:
        if not _refusal_logged:
            logger.warning(
                "djangoscope probe disabled: DEBUG is False. The probe records SQL parameters "
                "and stacks, so it only runs in development. Set "
                "DJANGOSCOPE = {'ALLOW_WITHOUT_DEBUG': True} to run it anyway."
            )
            _refusal_logged = True
        return False
    return True


class ProbeMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        if not probe_allowed():
            raise MiddlewareNotUsed("djangoscope probe disabled")
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        from . import capture

        capture.install()
        got_request_exception.connect(_on_exception, dispatch_uid="djangoscope-exception")
        setting_changed.connect(conf.reset, dispatch_uid="djangoscope-conf-reset")
        self._ensure_installed = capture.ensure_installed

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self.__acall__(request)
        unit, token = self._begin(request)
        if unit is None:
            return self.get_response(request)
        response = None
        try:
            response = self.get_response(request)
            return response
        finally:
            self._end(unit, token, request, response)

    async def __acall__(self, request: Any) -> Any:
        unit, token = self._begin(request)
        if unit is None:
            return await self.get_response(request)
        unit.is_async = True
        response = None
        try:
            response = await self.get_response(request)
            return response
        finally:
            self._end(unit, token, request, response)

    # -- internals: never raise ------------------------------------------------------------------
    def _begin(self, request: Any) -> tuple[recorder.Unit | None, Any]:
        try:
            config = conf.get_config()
            if config.ignores(request.path):
                return None, None
            self._ensure_installed()
            unit = recorder.Unit("http", config.limits)
            meta = request.META
            unit.request = {
                "method": request.method,
                "path": request.path,
                "query_string": meta.get("QUERY_STRING", ""),
                "content_type": meta.get("CONTENT_TYPE", ""),
                "bytes": _int_or_none(meta.get("CONTENT_LENGTH")),
                "route": None,
                "view": None,
            }
            token = recorder.current_unit.set(unit)
            request._djangoscope_unit = unit
            return unit, token
        except Exception:  # pragma: no cover - defensive: the probe never breaks a request
            sender.count_error()
            return None, None

    def _end(self, unit: recorder.Unit, token: Any, request: Any, response: Any) -> None:
        try:
            recorder.current_unit.reset(token)
        except Exception:  # pragma: no cover - token from another context
            recorder.current_unit.set(None)
        try:
            unit.finish()
            match = getattr(request, "resolver_match", None)
            if match is not None:
                unit.request["route"] = match.route or None
                unit.request["view"] = match.view_name or match._func_path
            if response is not None:
                streaming = bool(getattr(response, "streaming", False))
                length = response.get("Content-Length") if hasattr(response, "get") else None
                if not streaming and length is None:
                    content = getattr(response, "content", None)
                    length = len(content) if content is not None else None
                unit.response = {
                    "status": getattr(response, "status_code", None),
                    "bytes": _int_or_none(length),
                    "content_type": response.get("Content-Type", ""),
                    "streaming": streaming,
                }
            elif unit.exception is None:
                exc = sys.exc_info()[1]
                if exc is not None:
                    unit.exception = _describe(exc)
            recorder.publish(unit)
        except Exception:  # pragma: no cover - defensive
            sender.count_error()


def _on_exception(sender_: Any = None, request: Any = None, **kwargs: Any) -> None:
    """Record unhandled exceptions; Django turns them into 500s before we see the response."""
    try:
        unit = getattr(request, "_djangoscope_unit", None) or recorder.current_unit.get()
        exc = sys.exc_info()[1]
        if unit is not None and exc is not None and unit.exception is None:
            unit.exception = _describe(exc)
    except Exception:  # pragma: no cover - defensive
        sender.count_error()


def _describe(exc: BaseException) -> dict[str, Any]:
    return {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc)[:2000],
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[
            -20000:
        ],
    }


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
