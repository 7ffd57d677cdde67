"""The collector against real sockets on 127.0.0.1: handshake, auth, and hostile input."""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

import pytest

from djangoscope.app.ingest.server import Collector, CollectorError, Event
from djangoscope.probe import wire

TOKEN = "test-token-123"


@pytest.fixture
def collector():
    c = Collector("127.0.0.1", 0, token=TOKEN)
    c.start()
    yield c
    c.stop()


def next_event(c: Collector, kind: str, timeout: float = 5.0) -> Event:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = c.events.get(timeout=max(0.01, deadline - time.monotonic()))
        if event.kind == kind:
            return event
    raise AssertionError(f"no {kind} event")


def read_frame(sock: socket.socket) -> tuple[bytes, dict[str, Any]]:
    decoder = wire.FrameDecoder()
    while True:
        data = sock.recv(65536)
        assert data, "connection closed"
        for item in decoder.feed(data):
            return item


def handshake(c: Collector, token: str = TOKEN, protocol: int = wire.PROTOCOL_VERSION):
    sock = socket.create_connection(("127.0.0.1", c.port), timeout=5)
    kind, hello = read_frame(sock)
    assert kind == wire.HELLO and hello["protocol"] == wire.PROTOCOL_VERSION
    auth = {
        "protocol": protocol,
        "proof": wire.token_proof(token, hello["nonce"]),
        "identity": {"pid": 4242, "project": "tests"},
    }
    sock.sendall(wire.MAGIC + wire.encode_frame(wire.AUTH, auth))
    return sock, read_frame(sock)


def unit(i: int) -> dict[str, Any]:
    return {"id": f"4242-{i}", "request": {"method": "GET", "path": f"/{i}"}, "queries": []}


def test_authenticated_probe_streams_units(collector):
    sock, (kind, _welcome) = handshake(collector)
    assert kind == wire.WELCOME
    connected = next_event(collector, "connected")
    assert connected.connection.identity["pid"] == 4242
    for i in range(3):
        sock.sendall(wire.encode_frame(wire.UNIT, unit(i)))
    got = [next_event(collector, "unit").message["id"] for _ in range(3)]
    assert got == ["4242-0", "4242-1", "4242-2"]
    sock.close()
    assert next_event(collector, "disconnected").connection.units == 3


def test_wrong_token_is_refused_with_a_clear_message(collector):
    sock, (kind, answer) = handshake(collector, token="not-the-token")
    assert kind == wire.REFUSED
    assert answer["reason"] == wire.REFUSED_TOKEN
    assert "wrong token" in answer["message"]
    assert sock.recv(10) == b""  # and closed
    assert "wrong token" in next_event(collector, "rejected").reason
    assert collector.counters["refused"] == 1


def test_other_protocol_version_is_refused(collector):
    _, (kind, answer) = handshake(collector, protocol=99)
    assert kind == wire.REFUSED and answer["reason"] == wire.REFUSED_VERSION


def test_garbage_bytes_are_rejected_and_others_still_served(collector):
    bad = socket.create_connection(("127.0.0.1", collector.port), timeout=5)
    read_frame(bad)
    bad.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)))
    kind, answer = read_frame(bad)
    assert kind == wire.REFUSED and answer["reason"] == wire.REFUSED_MALFORMED
    assert "not a djangoscope probe" in next_event(collector, "rejected").reason
    good, (kind, _) = handshake(collector)
    assert kind == wire.WELCOME
    good.sendall(wire.encode_frame(wire.UNIT, unit(1)))
    assert next_event(collector, "unit").message["id"] == "4242-1"
    good.close()


def test_oversized_frame_closes_only_that_connection(collector):
    hostile, (_kind, _) = handshake(collector)
    other, _ = handshake(collector)
    hostile.sendall(struct.pack(">I", wire.MAX_FRAME + 1) + b"U{")
    rejected = next_event(collector, "rejected")
    assert "oversized" in rejected.reason
    hostile.settimeout(5)
    assert hostile.recv(10) == b""
    other.sendall(wire.encode_frame(wire.UNIT, unit(7)))
    assert next_event(collector, "unit").message["id"] == "4242-7"
    other.close()


def test_malformed_frames_are_counted_and_skipped(collector):
    sock, _ = handshake(collector)
    payload = b"U{not json"
    sock.sendall(struct.pack(">I", len(payload)) + payload)
    payload = b"Z{}"
    sock.sendall(struct.pack(">I", len(payload)) + payload)
    sock.sendall(wire.encode_frame(wire.UNIT, unit(2)))
    assert next_event(collector, "unit").message["id"] == "4242-2"
    assert collector.counters["bad_frames"] == 2
    sock.close()


def test_silent_client_times_out_without_blocking_others(collector, monkeypatch):
    import djangoscope.app.ingest.server as server

    monkeypatch.setattr(server, "HANDSHAKE_TIMEOUT", 0.3)
    silent = socket.create_connection(("127.0.0.1", collector.port), timeout=5)
    good, (kind, _) = handshake(collector)
    assert kind == wire.WELCOME
    assert "timed out" in next_event(collector, "rejected").reason
    silent.close()
    good.close()


def test_non_loopback_needs_opt_in():
    with pytest.raises(CollectorError, match="loopback-only"):
        Collector("0.0.0.0", 0, token=TOKEN)


def test_port_in_use_is_a_clear_error(collector):
    other = Collector("127.0.0.1", collector.port, token=TOKEN)
    with pytest.raises(CollectorError, match="cannot listen"):
        other.start()
