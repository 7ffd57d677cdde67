"""The background sender against a real collector on 127.0.0.1 (and a closed port)."""

from __future__ import annotations

import dataclasses
import logging
import time

import pytest

from djangoscope.app.demo import free_port
from djangoscope.app.ingest.server import Collector
from djangoscope.probe import conf, recorder
from djangoscope.probe.sender import Sender

TOKEN = "sender-test-token"


def make_config(address: str, **overrides) -> conf.ProbeConfig:
    return dataclasses.replace(conf.get_config(), address=address, token=TOKEN, **overrides)


def make_unit(i: int, queries: int = 0) -> recorder.Unit:
    unit = recorder.Unit()
    unit.request = {"method": "GET", "path": f"/{i}"}
    now = time.perf_counter_ns()
    for _ in range(queries):
        unit.add_query(
            {
                "sql": "SELECT 1 WHERE x = %s",
                "params": (1,),
                "alias": "default",
                "vendor": "sqlite",
                "start_ns": now,
                "end_ns": now + 1000,
            }
        )
    unit.finish()
    return unit


def received(collector: Collector, count: int, timeout: float = 10.0) -> list[dict]:
    units = []
    deadline = time.monotonic() + timeout
    while len(units) < count and time.monotonic() < deadline:
        try:
            event = collector.events.get(timeout=0.1)
        except Exception:
            continue
        if event.kind == "unit":
            units.append(event.message)
    return units


@pytest.fixture
def collector():
    c = Collector("127.0.0.1", free_port(), token=TOKEN)
    c.start()
    yield c
    c.stop()


def test_ring_is_bounded_by_bytes_and_keeps_the_newest():
    sender = Sender(make_config(f"127.0.0.1:{free_port()}", buffer_bytes=60_000), {"pid": 1})
    try:
        units = [make_unit(i, queries=10) for i in range(300)]
        for unit in units:
            sender.submit(unit)
        assert sender.buffered_bytes <= 60_000
        assert sender.stats["dropped"] == 300 - sender.buffered
        assert sender.stats["dropped"] > 250
        assert sender._ring[-1] is units[-1]
        assert not sender.connected.is_set()
    finally:
        sender.stop()


def test_units_reach_the_collector_in_order(collector):
    sender = Sender(make_config(collector.address), {"pid": 99, "project": "t"})
    try:
        for i in range(20):
            sender.submit(make_unit(i, queries=3))
        units = received(collector, 20)
        assert [u["request"]["path"] for u in units] == [f"/{i}" for i in range(20)]
        assert len(units[0]["queries"]) == 3
        assert sender.flush(5)
    finally:
        sender.stop()


def test_buffered_units_arrive_once_the_collector_starts():
    port = free_port()
    sender = Sender(make_config(f"127.0.0.1:{port}"), {"pid": 5})
    try:
        for i in range(5):
            sender.submit(make_unit(i))
        time.sleep(0.3)  # a few failed connects
        late = Collector("127.0.0.1", port, token=TOKEN)
        late.start()
        try:
            assert [u["request"]["path"] for u in received(late, 5)] == [f"/{i}" for i in range(5)]
        finally:
            late.stop()
    finally:
        sender.stop()


def test_collector_restart_loses_nothing_submitted_after_it(collector):
    sender = Sender(make_config(collector.address), {"pid": 6})
    try:
        sender.submit(make_unit(0))
        assert len(received(collector, 1)) == 1
        port = collector.port
        collector.stop()
        time.sleep(0.2)
        for i in range(1, 4):
            sender.submit(make_unit(i))
        again = Collector("127.0.0.1", port, token=TOKEN)
        again.start()
        try:
            paths = [u["request"]["path"] for u in received(again, 3)]
            assert paths == ["/1", "/2", "/3"]
        finally:
            again.stop()
    finally:
        sender.stop()


def test_wrong_token_is_refused_and_logged_once(collector, caplog):
    config = dataclasses.replace(make_config(collector.address), token="wrong")
    with caplog.at_level(logging.WARNING, logger="djangoscope.probe"):
        sender = Sender(config, {"pid": 7})
        try:
            sender.submit(make_unit(0))
            deadline = time.monotonic() + 5
            while sender.stats["refusals"] == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            sender.stop()
    assert sender.stats["refusals"] >= 1
    messages = [r.getMessage() for r in caplog.records if "refused this probe" in r.getMessage()]
    assert len(messages) == 1 and "wrong token" in messages[0]


def test_stop_flushes_what_is_buffered(collector):
    sender = Sender(make_config(collector.address), {"pid": 8})
    assert sender.connected.wait(5)
    for i in range(50):
        sender.submit(make_unit(i, queries=20))
    sender.stop(timeout=5)
    assert sender.stats["sent"] == 50
    assert len(received(collector, 50)) == 50


def test_sender_waits_for_a_quiet_moment_then_sends_the_batch(collector):
    sender = Sender(make_config(collector.address, send_delay=30.0), {"pid": 7})
    try:
        assert sender.connected.wait(5)
        running = recorder.Unit()  # a request still in progress in this process
        for i in range(3):
            sender.submit(make_unit(i))
        assert received(collector, 1, timeout=0.6) == []  # nothing while a request runs
        assert sender.buffered == 3
        running.finish()
        started = time.monotonic()
        units = received(collector, 3, timeout=5)
        assert [u["request"]["path"] for u in units] == ["/0", "/1", "/2"]
        assert time.monotonic() - started < 2  # quiet: QUIET plus at most one BUSY_POLL
    finally:
        sender.stop()


def test_continuous_load_is_sent_after_send_delay(collector):
    sender = Sender(make_config(collector.address, send_delay=0.3), {"pid": 8})
    try:
        assert sender.connected.wait(5)
        running = recorder.Unit()  # the process never goes quiet
        sender.submit(make_unit(0))
        assert [u["request"]["path"] for u in received(collector, 1, timeout=5)] == ["/0"]
        assert running in recorder._running
        running.finish()
    finally:
        sender.stop()


def test_flush_does_not_wait_for_a_quiet_moment(collector):
    sender = Sender(make_config(collector.address, send_delay=30.0), {"pid": 9})
    try:
        assert sender.connected.wait(5)
        running = recorder.Unit()
        sender.submit(make_unit(0))
        assert sender.flush(5)
        assert len(received(collector, 1, timeout=5)) == 1
        running.finish()
    finally:
        sender.stop()
