"""The protocol's framing and helpers, byte by byte."""

from __future__ import annotations

import os
import stat

import pytest

from djangoscope.probe import wire


def test_frames_round_trip_across_arbitrary_splits():
    messages = [(wire.UNIT, {"id": str(i), "sql": "SELECT é" * i}) for i in range(20)]
    data = b"".join(wire.encode_frame(k, m) for k, m in messages)
    decoder = wire.FrameDecoder()
    out = []
    for i in range(0, len(data), 7):
        out.extend(decoder.feed(data[i : i + 7]))
    assert out == messages
    assert decoder.pending == 0


def test_decoder_refuses_oversized_header_before_buffering():
    decoder = wire.FrameDecoder(limit=100)
    with pytest.raises(wire.ProtocolError, match="exceeds"):
        list(decoder.feed((101).to_bytes(4, "big") + b"U"))


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"", "empty"),
        (b"X{}", "unknown message type"),
        (b"U[1]", "not a JSON object"),
        (b"U{bad", "undecodable"),
        (b"U\xff\xfe", "undecodable"),
    ],
)
def test_bad_payloads_raise_protocol_error(payload, error):
    with pytest.raises(wire.ProtocolError, match=error):
        wire.decode_payload(payload)


def test_encoder_enforces_the_limit():
    with pytest.raises(wire.ProtocolError):
        wire.encode_frame(wire.UNIT, {"x": "a" * 200}, limit=100)


def test_token_proof_is_an_hmac_of_the_nonce():
    proof = wire.token_proof("secret", "nonce")
    assert wire.check_proof("secret", "nonce", proof)
    assert not wire.check_proof("other", "nonce", proof)
    assert not wire.check_proof("secret", "nonce", None)
    assert "secret" not in proof


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7433", ("127.0.0.1", 7433)),
        ("[::1]:80", ("::1", 80)),
        ("9000", ("127.0.0.1", 9000)),
        (":0", ("127.0.0.1", 0)),
    ],
)
def test_parse_address(text, expected):
    assert wire.parse_address(text) == expected


@pytest.mark.parametrize("text", ["", "host", "host:port", "1.2.3.4:70000", "[::1]80"])
def test_parse_address_rejects(text):
    with pytest.raises(ValueError):
        wire.parse_address(text)


def test_token_file_is_created_private_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("DJANGOSCOPE_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv("DJANGOSCOPE_TOKEN", raising=False)
    assert wire.read_token() is None
    token = wire.ensure_token()
    assert wire.ensure_token() == token == wire.read_token()
    mode = stat.S_IMODE(os.stat(wire.token_path()).st_mode)
    assert mode == 0o600
    monkeypatch.setenv("DJANGOSCOPE_TOKEN", "from-env")
    assert wire.read_token() == "from-env"


@pytest.mark.parametrize(
    "message",
    [
        {"sql": "SELECT %s", "params": [1, 2.5, None, True, "é", "x" * 300]},
        {"odd": b"\x00\x01", "set": {3}, "tuple": (1, 2), "surrogate": "\udc80", "big": 2**70},
        {"nested": {"a": [{"b": []}]}, "unicode": "日本語"},
    ],
)
def test_fast_and_stdlib_encoders_agree(message):
    pytest.importorskip("orjson")
    fast = wire._load_fast_dumps()
    assert fast is not None
    payload = wire._stdlib_dumps(message)
    assert wire.decode_payload(b"U" + fast(message)) == wire.decode_payload(b"U" + payload)


def test_stdlib_encoder_can_be_forced(monkeypatch):
    monkeypatch.setenv("DJANGOSCOPE_JSON", "stdlib")
    assert wire._load_fast_dumps() is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"s": "\\ud800"}', {"s": "\ud800"}),  # a lone surrogate escape: orjson refuses it
        (b'{"x": NaN}', None),  # NaN: orjson refuses it, the stdlib reads it
        (b'{"ok": [1, "two", {"three": 3.5}]}', {"ok": [1, "two", {"three": 3.5}]}),
    ],
)
def test_decoder_reads_what_either_json_library_accepts(body, expected):
    kind, message = wire.decode_payload(wire.UNIT + body)
    assert kind == wire.UNIT
    if expected is None:
        assert message["x"] != message["x"]  # NaN
    else:
        assert message == expected
