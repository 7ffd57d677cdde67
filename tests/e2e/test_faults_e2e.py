"""Faults with real processes: no collector, a killed collector, a wrong token, hostile bytes."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from djangoscope.app.core.store import SessionStore
from djangoscope.app.demo import free_port
from djangoscope.probe import wire

from .conftest import TOKEN, get

pytestmark = pytest.mark.e2e


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_without_a_collector_the_site_runs_as_if_no_probe(start_server):
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    server = start_server(closed)
    for _ in range(5):
        assert get(server.base + "/books/")[0] == 200
    before = rss_kib(server.process.pid)
    for _ in range(150):
        assert get(server.base + "/books/")[0] == 200
    grown = rss_kib(server.process.pid) - before
    # The ring is bounded (8 MiB of wire size by default); 150 N+1 pages would be ~9 MB.
    assert grown < 40 * 1024, f"RSS grew by {grown} KiB"
    assert "Traceback" not in server.output


def test_collector_killed_and_restarted_mid_stream(tmp_path, start_record, start_server):
    port = free_port()
    first = start_record(tmp_path / "first.djscope", listen=f"127.0.0.1:{port}")
    server = start_server(first.address)
    for _ in range(3):
        assert get(server.base + "/books/fixed/")[0] == 200
    deadline = time.monotonic() + 20
    while first.output.count(" /books/fixed/ ") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    first.kill()  # SIGKILL: no chance to say goodbye
    for _ in range(3):  # buffered by the probe while no collector listens
        assert get(server.base + "/authors/fixed/")[0] == 200
    second = start_record(tmp_path / "second.djscope", listen=f"127.0.0.1:{port}")
    second.wait_for("+ connected", timeout=30)
    for _ in range(2):
        assert get(server.base + "/books/tags/fixed/")[0] == 200
    deadline = time.monotonic() + 20
    while second.output.count(" /books/tags/fixed/ ") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert second.stop() == 0
    with SessionStore.open(tmp_path / "first.djscope") as store:
        assert [r["path"] for r in store.iter_requests()].count("/books/fixed/") == 3
    with SessionStore.open(tmp_path / "second.djscope") as store:
        paths = [r["path"] for r in store.iter_requests()]
    assert paths.count("/authors/fixed/") == 3, paths
    assert paths.count("/books/tags/fixed/") == 2, paths


def test_wrong_token_is_refused_with_a_clear_message_on_both_sides(
    tmp_path, start_record, start_server
):
    record = start_record(tmp_path / "s.djscope")
    server = start_server(record.address, token="not-the-token")
    assert get(server.base + "/books/fixed/")[0] == 200
    assert "wrong token" in record.wait_for("! rejected")
    assert "wrong token" in server.wait_for("refused this probe")
    assert "+ connected" not in record.output


def test_garbage_and_oversized_frames_do_not_stop_the_collector(
    tmp_path, start_record, start_server
):
    record = start_record(tmp_path / "s.djscope")
    host, port = wire.parse_address(record.address)
    garbage = socket.create_connection((host, port), timeout=5)
    garbage.sendall(b"\x00\xffGET / HTTP/1.0\r\n\r\n" * 10)
    hostile = socket.create_connection((host, port), timeout=5)
    decoder = wire.FrameDecoder()
    frames: list = []
    while not frames:
        frames.extend(decoder.feed(hostile.recv(4096)))
    hello = frames[0][1]
    auth = {"protocol": 1, "proof": wire.token_proof(TOKEN, hello["nonce"]), "identity": {}}
    hostile.sendall(wire.MAGIC + wire.encode_frame(wire.AUTH, auth))
    hostile.sendall(struct.pack(">I", 2**31) + b"U")
    record.wait_for("oversized")
    server = start_server(record.address)
    assert get(server.base + "/books/fixed/")[0] == 200
    record.wait_for(" /books/fixed/ ")
    assert record.stop() == 0
    garbage.close()
    hostile.close()
