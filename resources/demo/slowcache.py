"""A local-memory cache whose misses are slow, to make a cache miss visible on a timeline."""

from __future__ import annotations

import time
from typing import Any

from django.core.cache.backends.locmem import LocMemCache

_MISSING = object()


class SlowLocMemCache(LocMemCache):
    """``LocMemCache`` that sleeps ``OPTIONS["MISS_DELAY"]`` seconds (default 20 ms) per miss.

    Stands in for a remote cache on a cold or distant node: hits stay fast, misses cost a round
    trip. ``aget`` goes through ``get`` (``BaseCache`` runs it in a thread), so async misses are
    slow too.
    """

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        super().__init__(name, params)
        self.miss_delay = float(params.get("OPTIONS", {}).get("MISS_DELAY", 0.02))

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        value = super().get(key, _MISSING, version=version)
        if value is _MISSING:
            time.sleep(self.miss_delay)
            return default
        return value
