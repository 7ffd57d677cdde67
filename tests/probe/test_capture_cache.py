"""Cache capture on real locmem backends: every op, hit/miss, nesting, aliases, async, threads."""

from __future__ import annotations

import contextvars
import sys
import threading

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import cache, caches

from djangoscope.probe import capture, recorder, stacks
from djangoscope.probe.capture import cache as cache_capture


@pytest.fixture(autouse=True)
def empty_caches(installed):
    for alias in ("default", "second"):
        caches[alias].clear()
    yield
    for alias in ("default", "second"):
        caches[alias].clear()


def events(unit):
    return [(c["op"], c["hit"], c["hits"], c["misses"]) for c in unit.cache]


def test_nothing_recorded_outside_a_unit(recording):
    cache.set("k", 1)
    assert cache.get("k") == 1
    with recording() as unit:
        cache.get("k")
    cache.get("k")
    assert len(unit.cache) == 1


def test_get_hit_miss_and_stored_none(recording):
    cache.set("none", None)
    cache.set("one", 1)
    with recording() as unit:
        assert cache.get("one") == 1
        assert cache.get("missing") is None
        assert cache.get("missing", "dflt") == "dflt"
        assert cache.get("missing", default=5) == 5
        assert cache.get("none", "dflt") is None  # a stored None is a hit
    assert events(unit) == [
        ("get", True, 1, 0),
        ("get", False, 0, 1),
        ("get", False, 0, 1),
        ("get", False, 0, 1),
        ("get", True, 1, 0),
    ]
    first = unit.cache[0]
    assert first["alias"] == "default"
    assert first["backend"] == "LocMemCache"
    assert first["keys"] == ["one"]
    assert first["end_ns"] >= first["start_ns"]
    assert first["error"] is None


def test_every_write_op(recording):
    with recording() as unit:
        cache.set("a", 1)
        assert cache.add("a", 2) is False
        assert cache.add("b", 2) is True
        assert cache.touch("a", 60) is True
        assert cache.touch("zz", 60) is False
        assert cache.delete("b") is True
        cache.set_many({"x": 1, "y": 2})
        cache.delete_many(["x", "y"])
        cache.clear()
    assert events(unit) == [
        ("set", None, None, None),
        ("add", None, None, None),
        ("add", None, None, None),
        ("touch", True, 1, 0),
        ("touch", False, 0, 1),
        ("delete", None, None, None),
        ("set_many", None, None, None),
        ("delete_many", None, None, None),
        ("clear", None, None, None),
    ]
    assert unit.cache[6]["keys"] == ["x", "y"]
    assert unit.cache[8]["keys"] == []


def test_get_many_counts_each_key_and_is_one_event(recording):
    cache.set_many({"a": 1, "b": None})
    with recording() as unit:
        found = cache.get_many(key for key in ["a", "b", "c"])  # an iterator of keys
    assert found == {"a": 1, "b": None}
    # locmem's get_many calls get() per key: those are not separate events.
    assert events(unit) == [("get_many", None, 2, 1)]
    assert unit.cache[0]["keys"] == ["a", "b", "c"]


def test_get_or_set_hit_and_miss_without_double_counting(recording):
    calls = []

    def compute():
        calls.append(1)
        return "fresh"

    with recording() as unit:
        assert cache.get_or_set("k", compute) == "fresh"
        assert cache.get_or_set("k", compute) == "fresh"
        assert cache.get_or_set("plain", 3) == 3
    assert calls == [1]
    assert events(unit) == [
        ("get_or_set", False, 0, 1),
        ("get_or_set", True, 1, 0),
        ("get_or_set", False, 0, 1),
    ]


def test_has_key_incr_decr(recording):
    cache.set("n", 10)
    with recording() as unit:
        assert cache.has_key("n") is True
        assert "nope" not in cache  # __contains__ -> has_key
        assert cache.incr("n") == 11
        assert cache.decr("n", 5) == 6
        with pytest.raises(ValueError):
            cache.incr("missing")
        with pytest.raises(ValueError):
            cache.decr("missing")
    assert events(unit) == [
        ("has_key", True, 1, 0),
        ("has_key", False, 0, 1),
        ("incr", True, 1, 0),
        ("decr", True, 1, 0),
        ("incr", False, 0, 1),
        ("decr", False, 0, 1),
    ]
    assert [c["error"] for c in unit.cache] == [None] * 4 + ["ValueError"] * 2


def test_second_alias_is_captured(recording):
    second = caches["second"]
    with recording() as unit:
        second.set("s", 1)
        assert second.get("s") == 1
        assert cache.get("s") is None
    assert [(c["alias"], c["op"], c["hit"]) for c in unit.cache] == [
        ("second", "set", None),
        ("second", "get", True),
        ("default", "get", False),
    ]


def test_keys_are_cut(recording):
    keys = [f"k{i}" for i in range(30)]
    with recording() as unit:
        cache.get_many(keys)
        cache.get("x" * 230)
    assert unit.cache[0]["keys"] == keys[:20]
    assert unit.cache[1]["keys"] == ["x" * 200]


def test_backend_in_a_new_thread_is_wrapped(recording):
    seen = {}

    def work():
        backend = caches["second"]  # a new instance for this thread, made after install
        seen["wrapped"] = getattr(backend.get, "__djangoscope__", False)
        backend.set("t", 1)
        backend.get("t")

    with recording() as unit:
        ctx = contextvars.copy_context()
        thread = threading.Thread(target=ctx.run, args=(work,))
        thread.start()
        thread.join()
    assert seen == {"wrapped": True}
    assert events(unit) == [("set", None, None, None), ("get", True, 1, 0)]


def test_async_ops_are_one_event_each(recording):
    cache.set("a", 1)

    async def work():
        await cache.aset("b", 2)
        value = await cache.aget("a")
        missing = await cache.aget("zz", "d")
        many = await cache.aget_many(["a", "b", "c"])
        made = await cache.aget_or_set("c", lambda: 3)
        again = await cache.aget_or_set("c", lambda: 4)
        has = await cache.ahas_key("a")
        return value, missing, many, made, again, has

    with recording() as unit:
        result = async_to_sync(work)()
    assert result == (1, "d", {"a": 1, "b": 2}, 3, 3, True)
    assert events(unit) == [
        ("set", None, None, None),
        ("get", True, 1, 0),
        ("get", False, 0, 1),
        ("get_many", None, 2, 1),
        ("get_or_set", False, 0, 1),
        ("get_or_set", True, 1, 0),
        ("has_key", True, 1, 0),
    ]
    # The async call site is kept, not the worker thread that ran the sync method.
    frames = stacks.resolve(unit.cache[1]["stack"])
    assert any(f["app"] and f["func"].endswith("work") for f in frames)


def test_call_site_and_span(recording):
    with recording() as unit:
        line = sys._getframe().f_lineno + 1
        cache.get("where")
    frames = stacks.resolve(unit.cache[0]["stack"])
    app = [f for f in frames if f["app"]]
    assert (app[-1]["file"], app[-1]["line"]) == (__file__, line)
    span = next(s for s in unit.spans if s.kind == recorder.SPAN_CACHE)
    assert span.name == "get default"
    assert span.ref == 0


def test_wrapping_is_idempotent_and_removable(recording):
    capture.install()
    capture.ensure_installed()
    backend = caches["default"]
    assert backend.get.__wrapped__.__self__ is backend  # one layer: wraps the bound method
    cache_capture.unwrap(backend)
    assert "get" not in backend.__dict__
    with recording() as unit:
        cache.get("x")
    assert unit.cache == []
    capture.ensure_installed()  # the next request re-wraps it
    with recording() as unit:
        cache.get("x")
    assert len(unit.cache) == 1
