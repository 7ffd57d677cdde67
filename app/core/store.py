"""The session store: one SQLite file per recording session, documented in docs/session-schema.md.

Why SQLite: a session must survive the app, be readable by ``djangoscope report`` and by anyone
with the ``sqlite3`` CLI, take writes from the collector while the UI reads (WAL), and stay
bounded in size. Every UNIT message the collector receives becomes one ``requests`` row with
denormalized summary columns (so lists never aggregate on the fly) plus its spans, queries,
cache events and instance counts. Call stacks are stored once per distinct content.

Input is untrusted: a UNIT message comes from another process over a socket. Every field is
type-checked; what is valid is stored, what is missing or malformed gets a default, and
records that are not even objects are skipped and counted in ``requests.invalid_records``.

Every failure a user can cause (missing file, not a session, newer schema, corrupt file, full
disk, read-only file) surfaces as :class:`SessionError` with a one-line message.

One :class:`SessionStore` may be shared between threads (calls are serialized by a lock). Only
one process should write a session at a time; any number may read it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import fingerprint as fp

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "SessionError", "SessionStore"]

#: Version of the schema below; stored in ``PRAGMA user_version``. Bump on any change and add
#: a step to ``_MIGRATIONS``.
SCHEMA_VERSION = 1

#: ``PRAGMA application_id`` of every session file: "DJSC" as a big-endian int. It tells a
#: djangoscope session apart from any other SQLite database.
APPLICATION_ID = 0x444A5343

_SQLITE_MAGIC = b"SQLite format 3\x00"
_INT64_MAX = 2**63 - 1
#: When the size cap is exceeded, prune down to this fraction of it, so pruning runs in batches
#: rather than after every single request.
_PRUNE_TARGET = 0.9
_ITER_BATCH = 500

_SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT
);
CREATE TABLE processes (
    id              INTEGER PRIMARY KEY,
    connection      TEXT NOT NULL DEFAULT '',
    project         TEXT,
    settings_module TEXT,
    pid             INTEGER,
    host            TEXT,
    hostname        TEXT,
    server          TEXT,
    django          TEXT,
    python          TEXT,
    probe_version   TEXT,
    argv            TEXT,
    identity        TEXT,
    connected_at    REAL NOT NULL,
    disconnected_at REAL,
    stats           TEXT
);
CREATE TABLE requests (
    id                    INTEGER PRIMARY KEY,
    process_id            INTEGER REFERENCES processes(id),
    unit_id               TEXT,
    kind                  TEXT NOT NULL DEFAULT 'http',
    pid                   INTEGER,
    thread_id             INTEGER,
    thread_name           TEXT,
    is_async              INTEGER NOT NULL DEFAULT 0,
    started_at            REAL,
    received_at           REAL NOT NULL,
    duration_ms           REAL,
    cpu_ms                REAL,
    method                TEXT NOT NULL DEFAULT '',
    path                  TEXT NOT NULL DEFAULT '',
    query_string          TEXT NOT NULL DEFAULT '',
    route                 TEXT NOT NULL DEFAULT '',
    view                  TEXT NOT NULL DEFAULT '',
    request_content_type  TEXT,
    request_bytes         INTEGER,
    status                INTEGER,
    response_content_type TEXT,
    response_bytes        INTEGER,
    streaming             INTEGER NOT NULL DEFAULT 0,
    exception_type        TEXT,
    exception_message     TEXT,
    exception_traceback   TEXT,
    db_ms                 REAL NOT NULL DEFAULT 0,
    query_count           INTEGER NOT NULL DEFAULT 0,
    duplicate_query_count INTEGER NOT NULL DEFAULT 0,
    similar_query_count   INTEGER NOT NULL DEFAULT 0,
    cache_ms              REAL NOT NULL DEFAULT 0,
    cache_calls           INTEGER NOT NULL DEFAULT 0,
    cache_hits            INTEGER NOT NULL DEFAULT 0,
    cache_misses          INTEGER NOT NULL DEFAULT 0,
    template_count        INTEGER NOT NULL DEFAULT 0,
    instance_count        INTEGER NOT NULL DEFAULT 0,
    truncated             TEXT,
    invalid_records       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX requests_started_at ON requests(started_at);
CREATE INDEX requests_route ON requests(route, method);
CREATE INDEX requests_process ON requests(process_id);
CREATE TABLE stacks (
    id        INTEGER PRIMARY KEY,
    hash      TEXT NOT NULL UNIQUE,
    frames    TEXT NOT NULL,
    depth     INTEGER NOT NULL,
    call_file TEXT,
    call_line INTEGER,
    call_func TEXT
);
CREATE TABLE fingerprints (
    fingerprint TEXT PRIMARY KEY,
    normalized  TEXT NOT NULL,
    operation   TEXT NOT NULL,
    tables      TEXT NOT NULL
);
CREATE TABLE spans (
    request_id  INTEGER NOT NULL REFERENCES requests(id),
    span_id     INTEGER NOT NULL,
    parent      INTEGER,
    kind        TEXT NOT NULL DEFAULT '',
    name        TEXT NOT NULL DEFAULT '',
    start_ns    INTEGER,
    duration_ns INTEGER,
    ref         INTEGER,
    meta        TEXT
);
CREATE INDEX spans_request ON spans(request_id, span_id);
CREATE TABLE queries (
    id              INTEGER PRIMARY KEY,
    request_id      INTEGER NOT NULL REFERENCES requests(id),
    idx             INTEGER NOT NULL,
    span_id         INTEGER,
    alias           TEXT NOT NULL DEFAULT '',
    vendor          TEXT NOT NULL DEFAULT '',
    sql             TEXT NOT NULL DEFAULT '',
    params          TEXT,
    many            INTEGER NOT NULL DEFAULT 0,
    batch           INTEGER,
    start_ns        INTEGER,
    duration_ns     INTEGER,
    rowcount        INTEGER,
    atomic          INTEGER NOT NULL DEFAULT 0,
    savepoint_depth INTEGER NOT NULL DEFAULT 0,
    stack_id        INTEGER REFERENCES stacks(id),
    template_name   TEXT,
    template_line   INTEGER,
    orm             TEXT,
    orm_op          TEXT,
    orm_model       TEXT,
    orm_field       TEXT,
    error           TEXT,
    fingerprint     TEXT NOT NULL REFERENCES fingerprints(fingerprint),
    operation       TEXT NOT NULL DEFAULT 'OTHER',
    duplicate_of    INTEGER
);
CREATE INDEX queries_request ON queries(request_id, idx);
CREATE INDEX queries_fingerprint ON queries(fingerprint);
CREATE INDEX queries_stack ON queries(stack_id);
CREATE TABLE cache_events (
    id            INTEGER PRIMARY KEY,
    request_id    INTEGER NOT NULL REFERENCES requests(id),
    idx           INTEGER NOT NULL,
    span_id       INTEGER,
    alias         TEXT NOT NULL DEFAULT '',
    backend       TEXT,
    op            TEXT NOT NULL DEFAULT '',
    keys          TEXT,
    hit           INTEGER,
    hits          INTEGER,
    misses        INTEGER,
    start_ns      INTEGER,
    duration_ns   INTEGER,
    stack_id      INTEGER REFERENCES stacks(id),
    template_name TEXT,
    template_line INTEGER,
    error         TEXT
);
CREATE INDEX cache_events_request ON cache_events(request_id, idx);
CREATE INDEX cache_events_stack ON cache_events(stack_id);
CREATE TABLE instances (
    request_id INTEGER NOT NULL REFERENCES requests(id),
    model      TEXT NOT NULL,
    count      INTEGER NOT NULL,
    PRIMARY KEY (request_id, model)
) WITHOUT ROWID;
CREATE TABLE suggestions (
    id            INTEGER PRIMARY KEY,
    kind          TEXT NOT NULL,
    severity      TEXT NOT NULL DEFAULT 'info',
    title         TEXT NOT NULL DEFAULT '',
    detail        TEXT NOT NULL DEFAULT '',
    fix           TEXT NOT NULL DEFAULT '',
    model         TEXT,
    field         TEXT,
    fire_file     TEXT,
    fire_line     INTEGER,
    fix_file      TEXT,
    fix_line      INTEGER,
    queries_saved INTEGER,
    ms_saved      REAL,
    request_ids   TEXT NOT NULL DEFAULT '[]',
    fingerprint   TEXT,
    data          TEXT,
    created_at    REAL NOT NULL
);
"""

_TABLES = (
    "meta",
    "processes",
    "requests",
    "stacks",
    "fingerprints",
    "spans",
    "queries",
    "cache_events",
    "instances",
    "suggestions",
)

#: Upgrade steps: ``_MIGRATIONS[n]`` turns schema n into n + 1. Empty while only v1 exists.
_MIGRATIONS: dict[int, str] = {}

# Columns holding JSON text, decoded by the read API.
_JSON_COLUMNS = frozenset(
    {"argv", "identity", "stats", "truncated", "frames", "tables", "meta", "params", "orm", "keys"}
)
_JSON_COLUMNS_SUGGESTIONS = frozenset({"request_ids", "data"})


class SessionError(Exception):
    """A session file cannot be opened, read or written; ``str()`` is one line for the user.

    ``kind`` says why, for callers that react differently: ``missing``, ``not-sqlite``,
    ``not-session``, ``newer``, ``older``, ``corrupt``, ``full``, ``readonly``, ``locked``,
    ``io``, ``closed``, ``invalid``.
    """

    def __init__(self, message: str, kind: str = "io", path: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.path = path


# -- coercion of untrusted values ------------------------------------------------------------


def _clean_text(value: str) -> str:
    """Strings from the wire may hold lone surrogates, which SQLite cannot store as UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value


def _text(value: Any, default: str | None = None) -> str | None:
    if type(value) is str:
        return value if value.isascii() else _clean_text(value)  # isascii: C-fast, usual
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return default


def _int(value: Any) -> int | None:
    if type(value) is int:  # the usual case first
        return value if -_INT64_MAX <= value <= _INT64_MAX else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -_INT64_MAX <= value <= _INT64_MAX else None
    if isinstance(value, float) and math.isfinite(value) and abs(value) <= _INT64_MAX:
        return int(value)
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            result = float(value)
        except OverflowError:
            return None
        return result if math.isfinite(result) else None
    return None


def _flag(value: Any) -> int:
    return 1 if value is True or (isinstance(value, int) and value == 1) else 0


def _tristate(value: Any) -> int | None:
    if value is None or not isinstance(value, (bool, int)):
        return None
    return 1 if value else 0


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _scrub(value: Any, depth: int = 0) -> Any:
    """JSON-safe copy: non-finite floats and unknown types become strings."""
    if depth > 50:
        return "…"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _scrub(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v, depth + 1) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


#: One encoder for every call: json.dumps() with options builds a new JSONEncoder each time.
_canonical = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
).encode


def _json(value: Any) -> str | None:
    """Canonical JSON (sorted keys, compact), so equal values give equal text (duplicates)."""
    if value is None:
        return None
    try:
        text = _canonical(value)
    except (TypeError, ValueError, RecursionError):
        try:
            text = json.dumps(
                _scrub(value), ensure_ascii=False, sort_keys=True, separators=(",", ":")
            )
        except (TypeError, ValueError, RecursionError):
            text = json.dumps(repr(value)[:1000])
    return _clean_text(text)


def _unjson(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _template(value: Any) -> tuple[str | None, int | None]:
    """A template origin: ``[name, line]`` on the wire; ``{"name", "line"}`` tolerated."""
    if isinstance(value, (list, tuple)) and value:
        return _text(value[0]), _int(value[1]) if len(value) > 1 else None
    if isinstance(value, dict):
        return _text(value.get("name")), _int(value.get("line"))
    return None, None


def _error_text(value: Any) -> str | None:
    if value is None or value is False:
        return None
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        message = _text(value.get("message"), "")
        return f"{_clean_text(value['type'])}: {message}" if message else value["type"]
    return _json(value)


def _traceback_text(value: Any) -> str | None:
    if isinstance(value, list):
        return _clean_text("".join(str(line) for line in value))
    return _text(value)


def _clean_frames(value: Any) -> list[dict[str, Any]]:
    """Frames as ``{"file", "line", "func", "app"}`` dicts (4-item lists tolerated)."""
    frames = []
    for frame in _list(value):
        if isinstance(frame, dict):
            file, line, func, app = (
                frame.get("file"),
                frame.get("line"),
                frame.get("func"),
                frame.get("app"),
            )
        elif isinstance(frame, (list, tuple)) and len(frame) >= 3:
            file, line, func = frame[0], frame[1], frame[2]
            app = frame[3] if len(frame) > 3 else False
        else:
            continue
        frames.append(
            {
                "file": _text(file, "?"),
                "line": _int(line),
                "func": _text(func, "?"),
                "app": app is True,
            }
        )
    return frames


def call_site(frames: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The frame to blame: the innermost app frame, else the innermost frame.

    Frames are outermost-first, so "innermost" is the last one.
    """
    for frame in reversed(frames):
        if frame.get("app"):
            return frame
    return frames[-1] if frames else None


# -- the store ---------------------------------------------------------------------------------


def _djangoscope_version() -> str:
    try:
        from importlib.metadata import version

        return version("djangoscope")
    except Exception:
        return "unknown"


class SessionStore:
    """One session file. Create with :meth:`create` (write) or :meth:`open` (read by default).

    Reads return plain dicts whose keys are the column names of docs/session-schema.md, with
    JSON columns already decoded.
    """

    def __init__(
        self,
        path: str,
        connection: sqlite3.Connection,
        readonly: bool,
        max_bytes: int | None = None,
    ) -> None:
        # Use create() / open(); the constructor only wires an already validated connection.
        self.path = path
        self.readonly = readonly
        self.max_bytes = max_bytes
        self._conn: sqlite3.Connection | None = connection
        self._lock = threading.RLock()
        self._stack_ids: dict[str, int] = {}
        self._fingerprints: set[str] = set()
        self._process_ids: set[int] = set()
        self._pending_stacks: dict[str, int] = {}
        self._pending_fingerprints: set[str] = set()

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike[str], max_bytes: int | None = None) -> SessionStore:
        """Open ``path`` for recording: a new session, or append to an existing one.

        ``max_bytes`` caps the database size; past it the oldest requests are deleted (see
        :meth:`prune`). It is remembered in the file: ``None`` keeps the stored cap, ``0``
        removes it. Refuses (SessionError) anything that is not a djangoscope session, so a
        mistyped path never overwrites someone's database.
        """
        spath = os.fspath(path)
        parent = os.path.dirname(os.path.abspath(spath))
        if not os.path.isdir(parent):
            raise SessionError(
                f"cannot create session {spath}: folder {parent} does not exist", "missing", spath
            )
        if os.path.isdir(spath):
            raise SessionError(f"cannot use {spath} as a session: it is a folder", "io", spath)
        if os.path.exists(spath) and os.path.getsize(spath) > 0:
            _check_header(spath)
        conn = _connect(spath, readonly=False)
        try:
            store = cls(spath, conn, readonly=False)
            with store._guard("open"):
                app_id, version = _header_pragmas(conn)
                # A new (or zero-byte) file reads as application_id 0, user_version 0, no tables.
                if app_id in (0, APPLICATION_ID) and version == 0 and _is_empty(conn):
                    store._initialize()
                else:
                    store._validate(app_id, version, writable=True)
                store._configure_writer()
                stored_cap = store._meta_get("max_bytes")
                if max_bytes is None:
                    store.max_bytes = int(stored_cap) if stored_cap else None
                else:
                    store.max_bytes = max_bytes if max_bytes > 0 else None
                    store._meta_set({"max_bytes": str(store.max_bytes or "")})
                store._meta_set({"last_writer_version": _djangoscope_version()})
        except BaseException:
            conn.close()
            raise
        return store

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        readonly: bool = True,
        max_bytes: int | None = None,
    ) -> SessionStore:
        """Open an existing session; read-only by default (safe while a collector writes it)."""
        spath = os.fspath(path)
        if not os.path.exists(spath):
            raise SessionError(f"{spath}: no such session file", "missing", spath)
        if os.path.isdir(spath):
            raise SessionError(f"{spath} is a folder, not a session file", "io", spath)
        if os.path.getsize(spath) == 0:
            raise SessionError(
                f"{spath} is not a djangoscope session (empty file)", "not-sqlite", spath
            )
        _check_header(spath)
        conn = _connect(spath, readonly=readonly)
        try:
            store = cls(spath, conn, readonly=readonly, max_bytes=max_bytes)
            with store._guard("open"):
                app_id, version = _header_pragmas(conn)
                store._validate(app_id, version, writable=not readonly)
                if not readonly:
                    store._configure_writer()
                    if max_bytes is None:
                        stored_cap = store._meta_get("max_bytes")
                        store.max_bytes = int(stored_cap) if stored_cap else None
        except BaseException:
            conn.close()
            raise
        return store

    def _initialize(self) -> None:
        conn = self._connection()
        # Only settable before the first table: lets prune() give pages back to the disk.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Not executescript(): it would COMMIT first; one statement at a time, one transaction.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            version = _djangoscope_version()
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [
                    ("created_at", repr(time.time())),
                    ("djangoscope_version", version),
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("pruned_requests", "0"),
                ],
            )
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def _validate(self, app_id: int, version: int, writable: bool) -> None:
        conn = self._connection()
        if app_id != APPLICATION_ID:
            raise SessionError(
                f"{self.path} is an SQLite database but not a djangoscope session",
                "not-session",
                self.path,
            )
        if version > SCHEMA_VERSION:
            raise SessionError(
                f"{self.path} was written by a newer djangoscope (schema {version} > "
                f"{SCHEMA_VERSION}); upgrade djangoscope",
                "newer",
                self.path,
            )
        if version < 1:
            raise SessionError(
                f"{self.path} is an incomplete djangoscope session (never initialised)",
                "corrupt",
                self.path,
            )
        if version < SCHEMA_VERSION:
            if not writable:
                raise SessionError(
                    f"{self.path} uses an older session schema ({version} < {SCHEMA_VERSION}); "
                    "open it writable once to upgrade it",
                    "older",
                    self.path,
                )
            self._migrate(version)
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        missing = [name for name in _TABLES if name not in names]
        if missing:
            raise SessionError(
                f"{self.path} is a damaged djangoscope session (missing table {missing[0]})",
                "corrupt",
                self.path,
            )

    def _migrate(self, version: int) -> None:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for step in range(version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[step].split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def _configure_writer(self) -> None:
        conn = self._connection()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        self._process_ids = {row[0] for row in conn.execute("SELECT id FROM processes")}

    # -- plumbing --------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise SessionError(f"session {self.path} is closed", "closed", self.path)
        return self._conn

    @property
    def connection(self) -> sqlite3.Connection:
        """The raw connection, for ad hoc reads (and tests); do not write through it."""
        return self._connection()

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """Hold the lock and turn sqlite3 errors into SessionError."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise _translate(exc, self.path, action) from exc

    @contextmanager
    def _transaction(self, action: str) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back (nothing half-stored) on any error."""
        if self.readonly:
            raise SessionError(
                f"cannot {action}: session {self.path} was opened read-only", "readonly", self.path
            )
        with self._guard(action):
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise

    def _meta_get(self, key: str) -> str | None:
        row = self._connection().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _meta_set(self, values: dict[str, str]) -> None:
        with self._transaction("update the session metadata") as conn:
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                list(values.items()),
            )

    def close(self) -> None:
        """Close the file; a writer also optimizes and checkpoints it (the -wal file goes)."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                if not self.readonly:
                    conn.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass
            finally:
                conn.close()

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "ro" if self.readonly else "rw"
        return f"<SessionStore {self.path!r} {mode}>"

    # -- writing ---------------------------------------------------------------------------
    def add_process(self, identity: dict[str, Any], connection: str) -> int:
        """Record a connected probe process (its handshake identity); returns its id."""
        ident = _dict(identity)
        argv = ident.get("argv")
        row = (
            _text(connection, ""),
            _text(ident.get("project")),
            _text(ident.get("settings_module")),
            _int(ident.get("pid")),
            _text(ident.get("host")),
            _text(ident.get("hostname")),
            _text(ident.get("server")),
            _text(ident.get("django")),
            _text(ident.get("python")),
            _text(ident.get("probe_version")),
            _json([_text(a, "") for a in argv] if isinstance(argv, list) else None),
            _json(ident) if ident else None,
            time.time(),
        )
        with self._transaction("record a process") as conn:
            cursor = conn.execute(
                "INSERT INTO processes (connection, project, settings_module, pid, host, "
                "hostname, server, django, python, probe_version, argv, identity, connected_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            process_id = int(cursor.lastrowid or 0)
        self._process_ids.add(process_id)
        return process_id

    def end_process(self, process_id: int, stats: dict[str, Any] | None = None) -> None:
        """Mark a process disconnected, optionally with its last STATS counters."""
        with self._transaction("record a process end") as conn:
            conn.execute(
                "UPDATE processes SET disconnected_at = ?, stats = coalesce(?, stats) WHERE id = ?",
                (time.time(), _json(stats) if isinstance(stats, dict) else None, process_id),
            )

    def set_process_stats(self, process_id: int, stats: dict[str, Any]) -> None:
        """Keep the latest STATS counters of a process (units sent, dropped, ...)."""
        with self._transaction("record process stats") as conn:
            conn.execute(
                "UPDATE processes SET stats = ? WHERE id = ?",
                (_json(_dict(stats)), process_id),
            )

    def add_unit(self, process_id: int | None, message: dict[str, Any]) -> int:
        """Store one UNIT message in one transaction; returns the new request id.

        Computes the summary columns (db time, query/duplicate/similar counts, cache hit/miss
        ...). Either everything of the unit is stored or nothing is. Afterwards the size cap is
        enforced, which may delete the oldest requests.
        """
        if not isinstance(message, dict):
            raise SessionError(
                f"a UNIT message must be a JSON object, not {type(message).__name__}",
                "invalid",
                self.path,
            )
        if process_id is not None and process_id not in self._process_ids:
            raise SessionError(
                f"unknown process id {process_id!r}: call add_process() first", "invalid", self.path
            )
        unit = _Unit(message)  # validation needs no lock
        with self._lock:  # the caches below are shared: keep other writers out until done
            with self._transaction("store a request") as conn:
                request_id = unit.insert(conn, process_id, self)
            self._commit_caches()
            if self.max_bytes:
                self.prune()
        return request_id

    # Stack and fingerprint rows are shared across requests; the ids inserted inside the
    # current transaction stay "pending" until it commits, so a rollback cannot leave the
    # caches pointing at rows that were never written.
    def _stack_id(self, conn: sqlite3.Connection, frames: list[dict[str, Any]]) -> int:
        text = _json(frames) or "[]"
        digest = hashlib.sha1(text.encode("utf-8")).hexdigest()
        known = self._stack_ids.get(digest) or self._pending_stacks.get(digest)
        if known is not None:
            return known
        row = conn.execute("SELECT id FROM stacks WHERE hash = ?", (digest,)).fetchone()
        if row is None:
            site = call_site(frames) or {}
            cursor = conn.execute(
                "INSERT INTO stacks (hash, frames, depth, call_file, call_line, call_func) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (digest, text, len(frames), site.get("file"), site.get("line"), site.get("func")),
            )
            stack_id = int(cursor.lastrowid or 0)
        else:
            stack_id = int(row[0])
        self._pending_stacks[digest] = stack_id
        return stack_id

    def _fingerprint(self, conn: sqlite3.Connection, shape: Any) -> None:
        digest = shape.fingerprint
        if digest in self._fingerprints or digest in self._pending_fingerprints:
            return
        conn.execute(
            "INSERT OR IGNORE INTO fingerprints (fingerprint, normalized, operation, tables) "
            "VALUES (?, ?, ?, ?)",
            (digest, _clean_text(shape.normalized), shape.operation, _json(list(shape.tables))),
        )
        self._pending_fingerprints.add(digest)

    def _begin_caches(self) -> None:
        self._pending_stacks = {}
        self._pending_fingerprints = set()

    def _commit_caches(self) -> None:
        self._stack_ids.update(self._pending_stacks)
        self._fingerprints.update(self._pending_fingerprints)
        self._pending_stacks = {}
        self._pending_fingerprints = set()

    # -- size cap --------------------------------------------------------------------------
    def size_bytes(self) -> int:
        """Bytes of the database in use (pages minus free pages; the -wal file excluded)."""
        with self._guard("measure the session"):
            conn = self._connection()
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            return int(page_size) * (int(pages) - int(free))

    def prune(self, max_bytes: int | None = None) -> int:
        """Delete the oldest requests until the session fits; returns how many were deleted.

        Retention policy: when the database exceeds ``max_bytes`` (default: the store's cap),
        whole requests are deleted oldest first (by arrival, i.e. id) with all their spans,
        queries, cache events and instance counts, until it is under 90 % of the cap. The
        newest request is always kept. Stacks and fingerprints no longer referenced go too.
        ``meta.pruned_requests`` accumulates the count, ``meta.last_pruned_at`` the time.
        """
        cap = max_bytes if max_bytes is not None else self.max_bytes
        if not cap or cap < 0:
            return 0
        with self._lock:
            used = self.size_bytes()
            if used <= cap:
                return 0
            target = int(cap * _PRUNE_TARGET)
            deleted = 0
            count = self.request_count()
            while used > target and count > 1:
                per_request = max(1, used // count)
                batch = min(count - 1, max(1, math.ceil((used - target) / per_request)))
                self._delete_oldest(batch)
                deleted += batch
                count -= batch
                used = self.size_bytes()
            with self._guard("shrink the session"):
                # Give freed pages back to the file system: the file itself stays near the cap.
                self._connection().execute("PRAGMA incremental_vacuum")
            return deleted

    def _delete_oldest(self, n: int) -> None:
        with self._transaction("prune the session") as conn:
            row = conn.execute(
                "SELECT id FROM requests ORDER BY id LIMIT 1 OFFSET ?", (n - 1,)
            ).fetchone()
            if row is None:
                return
            last = row[0]
            for table in ("spans", "queries", "cache_events", "instances"):
                conn.execute(f"DELETE FROM {table} WHERE request_id <= ?", (last,))
            conn.execute("DELETE FROM requests WHERE id <= ?", (last,))
            conn.execute(
                "DELETE FROM stacks WHERE NOT EXISTS "
                "(SELECT 1 FROM queries WHERE queries.stack_id = stacks.id) AND NOT EXISTS "
                "(SELECT 1 FROM cache_events WHERE cache_events.stack_id = stacks.id)"
            )
            conn.execute(
                "DELETE FROM fingerprints WHERE NOT EXISTS (SELECT 1 FROM queries "
                "WHERE queries.fingerprint = fingerprints.fingerprint)"
            )
            previous = conn.execute(
                "SELECT value FROM meta WHERE key = 'pruned_requests'"
            ).fetchone()
            total = (int(previous[0]) if previous and previous[0] else 0) + n
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [
                    ("pruned_requests", str(total)),
                    ("last_pruned_at", repr(time.time())),
                    ("pruned_through_id", str(last)),
                ],
            )
        # Deleted stack/fingerprint rows may be cached; start the caches afresh.
        self._stack_ids.clear()
        self._fingerprints.clear()

    # -- reading ---------------------------------------------------------------------------
    def _rows(
        self, sql: str, args: tuple[Any, ...] = (), json_columns: frozenset[str] = _JSON_COLUMNS
    ) -> list[dict[str, Any]]:
        with self._guard("read the session"):
            cursor = self._connection().execute(sql, args)
            names = [d[0] for d in cursor.description]
            decode = [name in json_columns for name in names]
            return [
                {
                    name: (_unjson(value) if dec else value)
                    for name, value, dec in zip(names, row, decode, strict=True)
                }
                for row in cursor.fetchall()
            ]

    def meta(self) -> dict[str, str]:
        """The key/value metadata (created_at, djangoscope_version, pruned_requests, ...)."""
        with self._guard("read the session"):
            return dict(self._connection().execute("SELECT key, value FROM meta").fetchall())

    @property
    def schema_version(self) -> int:
        with self._guard("read the session"):
            return int(self._connection().execute("PRAGMA user_version").fetchone()[0])

    def processes(self) -> list[dict[str, Any]]:
        """Every process that connected, in order."""
        return self._rows("SELECT * FROM processes ORDER BY id")

    def request_count(self) -> int:
        with self._guard("read the session"):
            return int(self._connection().execute("SELECT count(*) FROM requests").fetchone()[0])

    def iter_requests(
        self, after_id: int = 0, limit: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Request summaries by id (arrival order), read in batches; ``after_id`` for polling."""
        remaining = limit
        last = after_id
        while remaining is None or remaining > 0:
            size = _ITER_BATCH if remaining is None else min(_ITER_BATCH, remaining)
            rows = self._rows(
                "SELECT * FROM requests WHERE id > ? ORDER BY id LIMIT ?", (last, size)
            )
            if not rows:
                return
            yield from rows
            last = rows[-1]["id"]
            if remaining is not None:
                remaining -= len(rows)
            if len(rows) < size:
                return

    def request(self, request_id: int) -> dict[str, Any] | None:
        """One request summary (plus its ``instances`` dict), or None if absent or pruned."""
        rows = self._rows("SELECT * FROM requests WHERE id = ?", (request_id,))
        if not rows:
            return None
        row = rows[0]
        row["instances"] = self.instances(request_id)
        return row

    def queries(self, request_id: int) -> list[dict[str, Any]]:
        """The request's queries in execution order, with ``normalized`` SQL joined in."""
        return self._rows(
            "SELECT q.*, f.normalized AS normalized FROM queries q "
            "LEFT JOIN fingerprints f ON f.fingerprint = q.fingerprint "
            "WHERE q.request_id = ? ORDER BY q.idx",
            (request_id,),
        )

    def iter_all_queries(self, after_id: int = 0) -> Iterator[dict[str, Any]]:
        """Every query of the session, read in batches, grouped by request in execution order.

        A unit's queries are inserted together, so id order is (request_id, idx) order.
        """
        last = after_id
        while True:
            rows = self._rows(
                "SELECT * FROM queries WHERE id > ? ORDER BY id LIMIT ?", (last, _ITER_BATCH * 4)
            )
            if not rows:
                return
            yield from rows
            last = rows[-1]["id"]

    def cache_events(self, request_id: int) -> list[dict[str, Any]]:
        """The request's cache calls in order."""
        return self._rows(
            "SELECT * FROM cache_events WHERE request_id = ? ORDER BY idx", (request_id,)
        )

    def spans(self, request_id: int) -> list[dict[str, Any]]:
        """The request's span tree as rows (``parent`` holds the parent span_id), by span id."""
        return self._rows(
            "SELECT * FROM spans WHERE request_id = ? ORDER BY span_id", (request_id,)
        )

    def instances(self, request_id: int) -> dict[str, int]:
        """Model instances created during the request: ``{"app.Model": n}``."""
        with self._guard("read the session"):
            return dict(
                self._connection()
                .execute(
                    "SELECT model, count FROM instances WHERE request_id = ? ORDER BY model",
                    (request_id,),
                )
                .fetchall()
            )

    def stack(self, stack_id: int) -> dict[str, Any] | None:
        """One deduplicated stack: frames (outermost first) and its call site."""
        rows = self._rows("SELECT * FROM stacks WHERE id = ?", (stack_id,))
        return rows[0] if rows else None

    def fingerprint_info(self, digest: str) -> dict[str, Any] | None:
        """Normalized SQL, operation and tables of one fingerprint."""
        rows = self._rows("SELECT * FROM fingerprints WHERE fingerprint = ?", (digest,))
        return rows[0] if rows else None

    def suggestions(self) -> list[dict[str, Any]]:
        """Stored suggestions (filled by the analysis), by id."""
        return self._rows(
            "SELECT * FROM suggestions ORDER BY id", json_columns=_JSON_COLUMNS_SUGGESTIONS
        )


class _Unit:
    """A UNIT message validated into row tuples, plus its summary. Pure Python, no I/O."""

    def __init__(self, message: dict[str, Any]) -> None:
        self.message = message
        self.invalid = 0
        request = _dict(message.get("request"))
        response = _dict(message.get("response"))
        exception = message.get("exception")
        exception = exception if isinstance(exception, dict) else {}
        duration_ns = _float(message.get("duration_ns"))
        cpu_ns = _float(message.get("cpu_ns"))
        method = _text(request.get("method"), "") or ""
        self.summary: dict[str, Any] = {
            "unit_id": _text(message.get("id")),
            "kind": _text(message.get("kind"), "http") or "http",
            "pid": _int(message.get("pid")),
            "thread_id": _int(message.get("thread_id")),
            "thread_name": _text(message.get("thread_name")),
            "is_async": _flag(message.get("async")),
            "started_at": _float(message.get("started_at")),
            "received_at": time.time(),
            "duration_ms": duration_ns / 1e6 if duration_ns is not None else None,
            "cpu_ms": cpu_ns / 1e6 if cpu_ns is not None else None,
            "method": method.upper(),
            "path": _text(request.get("path"), "") or "",
            "query_string": _text(request.get("query_string"), "") or "",
            "route": _text(request.get("route"), "") or "",
            "view": _text(request.get("view"), "") or "",
            "request_content_type": _text(request.get("content_type")),
            "request_bytes": _int(request.get("bytes")),
            "status": _int(response.get("status")),
            "response_content_type": _text(response.get("content_type")),
            "response_bytes": _int(response.get("bytes")),
            "streaming": _flag(response.get("streaming")),
            "exception_type": _text(exception.get("type")),
            "exception_message": _text(exception.get("message")),
            "exception_traceback": _traceback_text(exception.get("traceback")),
        }
        truncated = message.get("truncated")
        self.summary["truncated"] = (
            _json({str(k): v for k, v in truncated.items() if _int(v) is not None})
            if isinstance(truncated, dict) and truncated
            else None
        )
        self.stacks = _dict(message.get("stacks"))
        self.queries = self._queries(_list(message.get("queries")))
        self.cache = self._cache(_list(message.get("cache")))
        self.spans = self._spans(_list(message.get("spans")))
        self.instances = self._instances(_dict(message.get("instances")))

    def _records(self, items: list[Any]) -> Iterator[tuple[int, dict[str, Any]]]:
        for index, item in enumerate(items):
            if isinstance(item, dict):
                yield index, item
            else:
                self.invalid += 1

    def _queries(self, items: list[Any]) -> list[dict[str, Any]]:
        rows = []
        seen: dict[tuple[str, str, str | None], int] = {}
        fingerprints: dict[str, int] = {}
        duplicates = similar = 0
        db_ns = 0.0
        for index, q in self._records(items):
            sql = _text(q.get("sql"), "") or ""
            shape = fp.analyse(sql)
            alias = _text(q.get("alias"), "") or ""
            params = _json(q.get("params"))
            duration = _int(q.get("duration_ns"))
            if duration is not None:
                db_ns += duration
            duplicate_of = None
            if shape.operation not in fp.TRANSACTION_OPERATIONS:
                key = (alias, sql, params)
                if key in seen:
                    duplicate_of = seen[key]
                    duplicates += 1
                else:
                    seen[key] = index
                if shape.fingerprint in fingerprints:
                    similar += 1
                else:
                    fingerprints[shape.fingerprint] = index
            orm = q.get("orm")
            orm = orm if isinstance(orm, dict) else None
            template_name, template_line = _template(q.get("template"))
            rows.append(
                {
                    "idx": index,
                    "span_id": _int(q.get("span")),
                    "alias": alias,
                    "vendor": _text(q.get("vendor"), "") or "",
                    "sql": sql,
                    "params": params,
                    "many": _flag(q.get("many")),
                    "batch": _int(q.get("batch")),
                    "start_ns": _int(q.get("start_ns")),
                    "duration_ns": duration,
                    "rowcount": _int(q.get("rowcount")),
                    "atomic": _flag(q.get("atomic")),
                    "savepoint_depth": _int(q.get("savepoint_depth")) or 0,
                    "stack": q.get("stack"),
                    "template_name": template_name,
                    "template_line": template_line,
                    "orm": _json(orm),
                    "orm_op": _text(orm.get("op")) if orm else None,
                    "orm_model": _text(orm.get("model")) if orm else None,
                    "orm_field": _text(orm.get("field")) if orm else None,
                    "error": _error_text(q.get("error")),
                    "shape": shape,
                    "operation": shape.operation,
                    "duplicate_of": duplicate_of,
                }
            )
        self.summary.update(
            db_ms=db_ns / 1e6,
            query_count=len(rows),
            duplicate_query_count=duplicates,
            similar_query_count=similar,
        )
        return rows

    def _cache(self, items: list[Any]) -> list[dict[str, Any]]:
        rows = []
        hits = misses = 0
        cache_ns = 0.0
        for index, c in self._records(items):
            hit = _tristate(c.get("hit"))
            n_hits, n_misses = _int(c.get("hits")), _int(c.get("misses"))
            if n_hits is not None or n_misses is not None:
                hits += max(0, n_hits or 0)
                misses += max(0, n_misses or 0)
            elif hit is not None:
                hits += hit
                misses += 1 - hit
            duration = _int(c.get("duration_ns"))
            if duration is not None:
                cache_ns += duration
            keys = c.get("keys")
            if isinstance(keys, str):
                keys = [keys]
            template_name, template_line = _template(c.get("template"))
            rows.append(
                {
                    "idx": index,
                    "span_id": _int(c.get("span")),
                    "alias": _text(c.get("alias"), "") or "",
                    "backend": _text(c.get("backend")),
                    "op": _text(c.get("op"), "") or "",
                    "keys": _json(keys if isinstance(keys, list) else []),
                    "hit": hit,
                    "hits": n_hits,
                    "misses": n_misses,
                    "start_ns": _int(c.get("start_ns")),
                    "duration_ns": duration,
                    "stack": c.get("stack"),
                    "template_name": template_name,
                    "template_line": template_line,
                    "error": _error_text(c.get("error")),
                }
            )
        self.summary.update(
            cache_ms=cache_ns / 1e6, cache_calls=len(rows), cache_hits=hits, cache_misses=misses
        )
        return rows

    def _spans(self, items: list[Any]) -> list[dict[str, Any]]:
        rows = []
        templates = 0
        for index, s in self._records(items):
            kind = _text(s.get("kind"), "") or ""
            if kind == "template":
                templates += 1
            span_id = _int(s.get("id"))
            meta = s.get("meta")
            rows.append(
                {
                    "span_id": index if span_id is None else span_id,
                    "parent": _int(s.get("parent")),
                    "kind": kind,
                    "name": _text(s.get("name"), "") or "",
                    "start_ns": _int(s.get("start_ns")),
                    "duration_ns": _int(s.get("duration_ns")),
                    "ref": _int(s.get("ref")),
                    "meta": _json(meta) if isinstance(meta, dict) and meta else None,
                }
            )
        self.summary["template_count"] = templates
        return rows

    def _instances(self, items: dict[str, Any]) -> list[tuple[str, int]]:
        rows = []
        for model, count in items.items():
            n = _int(count)
            if isinstance(model, str) and n is not None:
                rows.append((_clean_text(model), n))
        self.summary["instance_count"] = sum(n for _, n in rows)
        return rows

    def _stack_ref(self, conn: sqlite3.Connection, store: SessionStore, ref: Any) -> int | None:
        if not isinstance(ref, str) or ref not in self.stacks:
            return None
        frames = _clean_frames(self.stacks[ref])
        if not frames:
            return None
        return store._stack_id(conn, frames)

    def insert(self, conn: sqlite3.Connection, process_id: int | None, store: SessionStore) -> int:
        store._begin_caches()
        summary = dict(self.summary, process_id=process_id, invalid_records=self.invalid)
        request_id = _insert_rows(conn, "requests", [summary])
        stack_ids: dict[str | None, int | None] = {}

        def stack_id(ref: Any) -> int | None:
            key = ref if isinstance(ref, str) else None
            if key not in stack_ids:
                stack_ids[key] = self._stack_ref(conn, store, key)
            return stack_ids[key]

        for q in self.queries:
            store._fingerprint(conn, q["shape"])
        _insert_rows(
            conn,
            "queries",
            [
                {
                    "request_id": request_id,
                    **{k: v for k, v in q.items() if k not in ("stack", "shape")},
                    "stack_id": stack_id(q["stack"]),
                    "fingerprint": q["shape"].fingerprint,
                }
                for q in self.queries
            ],
        )
        _insert_rows(
            conn,
            "cache_events",
            [
                {
                    "request_id": request_id,
                    **{k: v for k, v in c.items() if k != "stack"},
                    "stack_id": stack_id(c["stack"]),
                }
                for c in self.cache
            ],
        )
        _insert_rows(conn, "spans", [{"request_id": request_id, **s} for s in self.spans])
        _insert_rows(
            conn,
            "instances",
            [{"request_id": request_id, "model": m, "count": n} for m, n in self.instances],
        )
        return request_id


def _insert_rows(conn: sqlite3.Connection, table: str, rows: list[dict[str, Any]]) -> int:
    """INSERT dicts that share one key order (column names); returns the last rowid."""
    if not rows:
        return 0
    columns = list(rows[0])
    statement = (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    )
    if len(rows) == 1:
        # Only execute() reports lastrowid; executemany() leaves it unchanged.
        return int(conn.execute(statement, tuple(rows[0].values())).lastrowid or 0)
    conn.executemany(statement, [tuple(row.values()) for row in rows])
    return 0


# -- opening helpers ---------------------------------------------------------------------------


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open (SQLite already did after e.g. a full disk)."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def _check_header(path: str) -> None:
    """Recognise "not SQLite at all" before SQLite does, with a clearer message."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise SessionError(f"cannot read {path}: {exc.strerror or exc}", "io", path) from exc
    if header != _SQLITE_MAGIC:
        raise SessionError(
            f"{path} is not a djangoscope session (not an SQLite database)", "not-sqlite", path
        )


def _connect(path: str, readonly: bool) -> sqlite3.Connection:
    try:
        if readonly:
            uri = Path(path).resolve().as_uri() + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only = 1")
        else:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
    except sqlite3.Error as exc:
        raise _translate(exc, path, "open") from exc
    return conn


def _header_pragmas(conn: sqlite3.Connection) -> tuple[int, int]:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    return int(app_id), int(version)


def _is_empty(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


# Primary SQLite result codes (the low byte of the extended code).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 5, 6, 8
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL = 10, 11, 13
_SQLITE_NOTADB = 26


def _translate(exc: sqlite3.Error, path: str, action: str) -> SessionError:
    """One clear line per failure a user can meet, keeping SQLite's own words at the end."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc)
    lowered = text.lower()
    where = f"cannot open {path}" if action == "open" else f"cannot {action} in {path}"
    if primary == _SQLITE_FULL or "disk is full" in lowered:
        return SessionError(
            f"{where}: the disk is full or the session hit its page limit ({text}); "
            "free some space or start a new session",
            "full",
            path,
        )
    if primary == _SQLITE_READONLY or "readonly" in lowered or "read-only" in lowered:
        return SessionError(
            f"{where}: the file or its folder is read-only ({text})", "readonly", path
        )
    if primary == _SQLITE_NOTADB or "not a database" in lowered:
        return SessionError(
            f"{path} is not a djangoscope session (not an SQLite database)", "not-sqlite", path
        )
    if primary == _SQLITE_CORRUPT or "malformed" in lowered:
        return SessionError(f"{path} is corrupt ({text})", "corrupt", path)
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED) or "locked" in lowered:
        return SessionError(f"{where}: it is locked by another program ({text})", "locked", path)
    if primary == _SQLITE_IOERR:
        return SessionError(f"{where}: I/O error ({text})", "io", path)
    return SessionError(f"{where}: {text}", "io", path)
