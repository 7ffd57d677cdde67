"""The djangoscope wire protocol, shared by the probe (client) and the collector (server).

It lives with the probe because the probe must stay installable alone; the collector imports it.
Everything here is stdlib-only and free of I/O policy: callers own their sockets. The full
specification, with examples, is ``docs/protocol.md``; keep the two in step.

Shape of a connection::

    collector -> probe   HELLO    {"protocol", "nonce", "collector"}
    probe -> collector   MAGIC, then AUTH {"protocol", "proof", "identity"}
    collector -> probe   WELCOME {"protocol", "connection"}  or  REFUSED {"reason", "message"}
    probe -> collector   UNIT / STATS frames, forever
    collector -> probe   COMMAND frames (reserved), answered by RESULT frames

Every frame is a 4-byte big-endian payload length followed by the payload: one ASCII type byte
and a UTF-8 JSON object.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import struct
from collections.abc import Iterator
from typing import Any

#: Bumped on any incompatible change; a collector refuses probes that speak another version.
PROTOCOL_VERSION = 1

#: Sent by the probe right after it reads HELLO, so garbage is recognised on the first bytes.
MAGIC = b"DJSCOPE\x01"

#: Hard upper bound for one frame's payload. A request with thousands of queries is ~1-2 MB.
MAX_FRAME = 16 * 1024 * 1024

#: Largest handshake frame accepted before a peer is authenticated.
MAX_HANDSHAKE_FRAME = 64 * 1024

_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size

# Message types (one byte on the wire).
HELLO = b"H"
AUTH = b"A"
WELCOME = b"W"
REFUSED = b"R"
UNIT = b"U"  # one finished unit of work (an HTTP request) with its queries, cache calls, spans
STATS = b"S"  # probe counters: units sent, dropped, bytes buffered
COMMAND = b"C"  # collector -> probe, reserved for on-demand work (EXPLAIN, replay)
RESULT = b"O"  # probe -> collector, the answer to a COMMAND
BYE = b"B"  # either side, orderly close

MESSAGE_TYPES = frozenset({HELLO, AUTH, WELCOME, REFUSED, UNIT, STATS, COMMAND, RESULT, BYE})

# Refusal reasons (the "reason" field of REFUSED).
REFUSED_TOKEN = "bad-token"
REFUSED_VERSION = "protocol-version"
REFUSED_MALFORMED = "malformed"


class ProtocolError(ValueError):
    """Raised for any input that breaks the protocol; the message is meant for a human."""


def _stdlib_dumps(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False, default=_fallback)
    return body.encode("utf-8", "surrogatepass")


def _load_fast_dumps() -> Any:
    """orjson when installed (``pip install "djangoscope[fast]"``), else None.

    Same JSON on the wire, ~10x cheaper on the sender thread (bench/encoding.py). Optional so
    the probe's base install stays pure Python; ``DJANGOSCOPE_JSON=stdlib`` forces the stdlib.
    """
    if os.environ.get("DJANGOSCOPE_JSON", "").lower() == "stdlib":
        return None
    try:
        import orjson
    except ImportError:
        return None

    def dumps(message: dict[str, Any]) -> bytes:
        try:
            return orjson.dumps(message, default=_fallback)
        except (TypeError, ValueError):  # lone surrogates, huge ints: the stdlib copes
            return _stdlib_dumps(message)

    return dumps


def _load_fast_loads() -> Any:
    """orjson's decoder when installed: the collector decodes every frame (3-4x cheaper)."""
    if os.environ.get("DJANGOSCOPE_JSON", "").lower() == "stdlib":
        return None
    try:
        import orjson
    except ImportError:
        return None
    return orjson.loads


_fast_dumps = _load_fast_dumps()
_fast_loads = _load_fast_loads()
#: Which encoder this process uses ("orjson" or "json"), reported in the handshake identity.
ENCODER = "orjson" if _fast_dumps is not None else "json"
_dumps = _fast_dumps or _stdlib_dumps


def encode_frame(kind: bytes, message: dict[str, Any], limit: int = MAX_FRAME) -> bytes:
    """Serialize one message to a complete frame (header included).

    Raises ProtocolError if the result exceeds ``limit``: callers drop rather than send it.
    """
    payload = kind + _dumps(message)
    if len(payload) > limit:
        raise ProtocolError(f"frame of {len(payload)} bytes exceeds the {limit}-byte limit")
    return _HEADER.pack(len(payload)) + payload


def decode_payload(payload: bytes) -> tuple[bytes, dict[str, Any]]:
    """Split and validate one frame payload into (type, message)."""
    if not payload:
        raise ProtocolError("empty frame")
    kind = payload[:1]
    if kind not in MESSAGE_TYPES:
        raise ProtocolError(f"unknown message type {kind!r}")
    message = None
    if _fast_loads is not None:
        try:
            message = _fast_loads(payload[1:])
        except ValueError:  # lone surrogates, NaN, deep nesting: the stdlib has the last word
            message = None
    if message is None:
        try:
            message = json.loads(payload[1:].decode("utf-8", "surrogatepass"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ProtocolError(f"undecodable {kind.decode()} frame: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"{kind.decode()} frame is not a JSON object")
    return kind, message


class FrameDecoder:
    """Incremental decoder: feed it bytes as they arrive, iterate complete messages out.

    It never buffers more than one frame plus a header, so a hostile peer cannot make it grow.
    """

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self.limit = limit
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[bytes, dict[str, Any]]]:
        self._buffer += data
        while True:
            if len(self._buffer) < HEADER_SIZE:
                return
            (size,) = _HEADER.unpack_from(self._buffer)
            if size > self.limit:
                raise ProtocolError(f"frame of {size} bytes exceeds the {self.limit}-byte limit")
            end = HEADER_SIZE + size
            if len(self._buffer) < end:
                return
            payload = bytes(self._buffer[HEADER_SIZE:end])
            del self._buffer[:end]
            yield decode_payload(payload)

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buffer)


def new_nonce() -> str:
    return secrets.token_hex(16)


def token_proof(token: str, nonce: str) -> str:
    """Prove knowledge of the token without sending it: HMAC-SHA256(token, nonce), hex."""
    return hmac.new(token.encode(), nonce.encode(), hashlib.sha256).hexdigest()


def check_proof(token: str, nonce: str, proof: object) -> bool:
    return isinstance(proof, str) and hmac.compare_digest(token_proof(token, nonce), proof)


def parse_address(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """Parse ``host:port`` (``[::1]:port`` for IPv6, or a bare port) into a (host, port) pair."""
    text = value.strip()
    if not text:
        raise ValueError("empty address")
    if text.isdigit():
        host, port_text = default_host, text
    elif text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"bad address {value!r}: expected [host]:port")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"bad address {value!r}: expected host:port")
        host = host or default_host
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad port in address {value!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in address {value!r}")
    return host, port


#: Where the collector listens when nothing else is configured.
DEFAULT_ADDRESS = "127.0.0.1:7433"


def config_dir() -> str:
    """The user's private djangoscope folder (the token lives here).

    ``DJANGOSCOPE_HOME`` overrides it, which keeps tests and CI away from the real one.
    """
    override = os.environ.get("DJANGOSCOPE_HOME")
    if override:
        return override
    if os.name == "nt":
        base = os.environ.get("APPDATA") or os.path.expanduser("~")
    else:
        base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "djangoscope")


def token_path() -> str:
    return os.path.join(config_dir(), "token")


def read_token() -> str | None:
    """The token a probe should use: ``DJANGOSCOPE_TOKEN``, else the collector's token file."""
    env = os.environ.get("DJANGOSCOPE_TOKEN")
    if env:
        return env.strip()
    try:
        with open(token_path(), encoding="utf-8") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def ensure_token() -> str:
    """The collector's token, creating the user-private (0600) token file on first use."""
    env = os.environ.get("DJANGOSCOPE_TOKEN")
    if env:
        return env.strip()
    existing = read_token()
    if existing:
        return existing
    path = token_path()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    return token


def _fallback(value: object) -> object:
    """JSON for the odd values that reach the encoder (params are made safe before this)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)
