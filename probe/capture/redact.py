"""Turn captured SQL params into JSON-safe, redacted values (runs on the sender thread).

The rule, exactly (``docs/probe.md`` quotes it):

1. ``CAPTURE_PARAMS = False``: params are never sent (``None``).
2. Each value is bound to a column: for ``INSERT INTO t ("a", "b") VALUES (%s, %s), ...`` the
   column at the same position of the column list; otherwise the nearest identifier (quoted
   ``"col"``/```col``` or bare ``col``) before the placeholder, skipping operators, commas,
   parentheses, literals, other placeholders, function names (``UPPER(%s)``), type casts
   (``::text``) and the words ``IN NOT LIKE ILIKE BETWEEN AND OR IS NULL ESCAPE ANY ALL SOME``.
   So ``"col" = %s``, ``"t"."col" IN (%s, %s)``, ``"col" LIKE %s``, ``SET "col" = %s`` and
   ``"col" BETWEEN %s AND %s`` all bind to ``col``. A clause word (``SELECT WHERE LIMIT THEN``
   ...) met first means no column, except inside ``SET "col" = CASE ... THEN %s ... END`` (how
   ``bulk_update`` writes), where values bind to ``col``. Named ``%(name)s`` placeholders with
   dict params bind to the column found the same way, and the key name counts too.
3. The value becomes ``"[redacted]"`` when the column is sensitive: the ``SENSITIVE_PARAMS``
   regex (case-insensitive) matches, *in full*, the column name, one of its words, or a run of
   adjacent words (joined with ``_`` or with nothing). Words are split at ``_``, ``-``, ``.``,
   spaces, digits and camelCase humps: ``password``, ``user_password``, ``session_key``,
   ``x_api_key`` and ``accessToken`` are sensitive with the default regex; ``author_id`` is not
   (``auth`` must be a whole word).
4. The value also becomes ``"[redacted]"`` when it looks like a Django password hash:
   ``algorithm$...$...`` for pbkdf2_*, argon2, bcrypt(_sha256), scrypt, sha1, md5, crypt and
   unsalted_sha1, or any ``name$digits$salt$hash`` string.
5. What is left is made JSON-safe: None/bool/int/finite float as is; str cut to
   ``MAX_PARAM_LENGTH`` characters plus ``"…"``; bytes/bytearray/memoryview -> ``"<N bytes>"``;
   Decimal, date, datetime, time, timedelta, UUID -> ``str()`` (cut); lists/tuples (e.g.
   PostgreSQL arrays) element by element (first 100); anything else -> ``repr()`` (cut).

``executemany`` params are a list of rows, each redacted like a single statement's params.
"""

from __future__ import annotations

import datetime
import decimal
import math
import re
import uuid
from collections.abc import Callable
from typing import Any

from ..conf import REDACTED

ELLIPSIS = "…"
MAX_ITEMS = 100
_CACHE_SIZE = 4096

_TOKEN = re.compile(
    r"""
    (?P<ph>%\((?P<name>[^)]*)\)s|%s)
  | (?P<pct>%%)
  | (?P<qi>"(?:[^"]|"")*"|`[^`]*`)
  | (?P<str>'(?:[^']|'')*')
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<num>\d+(?:\.\d*)?)
  | (?P<cast>::)
  | (?P<op>\S)
    """,
    re.VERBOSE,
)

_SKIP_WORDS = frozenset(
    {"IN", "NOT", "LIKE", "ILIKE", "BETWEEN", "AND", "OR", "IS", "NULL", "ESCAPE", "ANY"}
    | {"ALL", "SOME", "COLLATE", "GLOB", "REGEXP"}
)
_STOP_WORDS = frozenset(
    {"SELECT", "FROM", "WHERE", "LIMIT", "OFFSET", "VALUES", "ON", "JOIN", "HAVING", "GROUP"}
    | {"ORDER", "BY", "AS", "CASE", "WHEN", "THEN", "ELSE", "END", "RETURNING", "UNION", "SET"}
    | {"INTO", "UPDATE", "INSERT", "DELETE", "DISTINCT", "USING", "EXISTS", "FETCH"}
)

_HASH = re.compile(
    r"^(?:(?:pbkdf2_[a-z0-9]+|argon2|bcrypt(?:_sha256)?|scrypt|sha1|md5|crypt|unsalted_sha1)"
    r"\$[^\s]*\$[^\s]*|[a-z][a-z0-9_]*\$\d+\$[^\s$]+\$[^\s$]+)$"
)
_WORD_SPLIT = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def looks_like_password_hash(value: str) -> bool:
    """Whether a string has the shape of a Django password hasher's output."""
    return len(value) < 1024 and "$" in value and _HASH.match(value) is not None


def _tokens(sql: str) -> list[tuple[str, str]]:
    return [(m.lastgroup or "op", m.group(m.lastgroup or 0)) for m in _TOKEN.finditer(sql)]


def _unquote(token: str) -> str:
    if token[:1] in ('"', "`"):
        return token[1:-1].replace('""', '"')
    return token


def _insert_columns(tokens: list[tuple[str, str]]) -> dict[int, str | None]:
    """Token index of each INSERT VALUES placeholder -> its column."""
    out: dict[int, str | None] = {}
    words = [(i, v.upper()) for i, (k, v) in enumerate(tokens[:4]) if k == "word"]
    if not words or words[0][1] not in ("INSERT", "REPLACE"):
        return out
    i = 0
    n = len(tokens)
    while i < n and tokens[i][1] != "(":
        if tokens[i][0] == "word" and tokens[i][1].upper() == "VALUES":
            return out
        i += 1
    columns: list[str] = []
    i += 1
    while i < n and tokens[i][1] != ")":
        kind, value = tokens[i]
        if kind in ("qi", "word"):
            columns.append(_unquote(value))
        i += 1
    while i < n and not (tokens[i][0] == "word" and tokens[i][1].upper() == "VALUES"):
        i += 1
    i += 1
    depth = 0
    position = 0
    while i < n:
        kind, value = tokens[i]
        if value == "(":
            depth += 1
            if depth == 1:
                position = 0
        elif value == ")":
            depth -= 1
        elif depth == 0 and value != ",":
            break
        elif depth == 1 and value == ",":
            position += 1
        elif kind == "ph" and depth >= 1:
            out[i] = columns[position] if position < len(columns) else None
        i += 1
    return out


def _case_targets(tokens: list[tuple[str, str]]) -> list[str | None]:
    """For each token, the column of an enclosing ``"col" = CASE ... END`` (or None)."""
    targets: list[str | None] = []
    stack: list[str | None] = []
    for i, (kind, value) in enumerate(tokens):
        if kind == "word":
            upper = value.upper()
            if upper == "CASE":
                target = None
                if i >= 2 and tokens[i - 1][1] == "=" and tokens[i - 2][0] in ("qi", "word"):
                    target = _unquote(tokens[i - 2][1])
                stack.append(target)
            elif upper == "END" and stack:
                stack.pop()
        targets.append(stack[-1] if stack else None)
    return targets


def _column_before(tokens: list[tuple[str, str]], index: int) -> str | bool | None:
    """Nearest identifier before token ``index``; False when a THEN/ELSE was met first."""
    j = index - 1
    while j >= 0:
        kind, value = tokens[j]
        if kind == "qi":
            return _unquote(value)
        if kind == "word":
            upper = value.upper()
            if upper in _SKIP_WORDS:
                pass
            elif upper in _STOP_WORDS:
                return False if upper in ("THEN", "ELSE") else None
            elif j + 1 < len(tokens) and tokens[j + 1][1] == "(":
                pass  # a function name: UPPER(%s)
            elif j > 0 and tokens[j - 1][0] == "cast":
                pass  # a type: ::text
            else:
                return value
        j -= 1
    return None


def bind_columns(sql: str) -> list[tuple[str | None, str | None]]:
    """For each placeholder, in order: (bound column or None, ``%(name)s`` name or None)."""
    tokens = _tokens(sql)
    inserts = _insert_columns(tokens)
    cases: list[str | None] | None = None
    out: list[tuple[str | None, str | None]] = []
    for i, (kind, _value) in enumerate(tokens):
        if kind != "ph":
            continue
        name = None
        if _value.startswith("%("):
            name = _value[2:-2]
        if i in inserts:
            out.append((inserts[i], name))
            continue
        column = _column_before(tokens, i)
        if column is False:
            if cases is None:
                cases = _case_targets(tokens)
            column = cases[i]
        out.append((column or None, name))  # type: ignore[arg-type]
    return out


def _words(identifier: str) -> list[str]:
    return [w.lower() for w in _WORD_SPLIT.findall(identifier)]


def make_sensitive_check(pattern: re.Pattern[str]) -> Callable[[str | None], bool]:
    """``check(column) -> bool`` implementing rule 3 (cached per column name)."""
    cache: dict[str, bool] = {}

    def check(column: str | None) -> bool:
        if not column:
            return False
        hit = cache.get(column)
        if hit is None:
            name = column.rsplit(".", 1)[-1]
            words = _words(name)
            candidates = {name, name.lower()}
            for start in range(len(words)):
                for end in range(start + 1, len(words) + 1):
                    run = words[start:end]
                    candidates.add("_".join(run))
                    candidates.add("".join(run))
            hit = any(pattern.fullmatch(c) for c in candidates)
            if len(cache) > _CACHE_SIZE:
                cache.clear()
            cache[column] = hit
        return hit

    return check


def make_safe(max_length: int) -> Callable[[Any], Any]:
    """``safe(value)``: rule 5 (JSON-safe, cut) for one value."""

    def cut(text: str) -> str:
        return text if len(text) <= max_length else text[:max_length] + ELLIPSIS

    def safe(value: Any, depth: int = 0) -> Any:
        if value is None or value is True or value is False:
            return value
        kind = type(value)
        if kind is int:
            return value
        if kind is str:
            return cut(value)
        if kind is float:
            return value if math.isfinite(value) else repr(value)
        if isinstance(value, (bytes, bytearray)):
            return f"<{len(value)} bytes>"
        if isinstance(value, memoryview):
            return f"<{value.nbytes} bytes>"
        if isinstance(value, bool):
            return bool(value)
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return safe(float(value))
        if isinstance(value, str):
            return cut(str(value))
        if isinstance(
            value,
            (decimal.Decimal, datetime.date, datetime.time, datetime.timedelta, uuid.UUID),
        ):
            return cut(str(value))
        if isinstance(value, (list, tuple)) and depth < 2:
            return [safe(item, depth + 1) for item in value[:MAX_ITEMS]]
        try:
            return cut(repr(value))
        except Exception:
            return f"<{type(value).__name__}>"

    return safe


def make_redactor(config: Any) -> Callable[[str, Any, bool], Any]:
    """``redactor(sql, params, many)`` for ``Unit.to_message``: JSON-safe, redacted params.

    Returns a list (a list of row lists for ``many``), a dict for dict params, or None.
    """
    if not config.capture_params:

        def nothing(sql: str, params: Any, many: bool) -> None:
            return None

        return nothing

    sensitive = make_sensitive_check(config.sensitive)
    safe = make_safe(config.max_param_length)
    bindings: dict[str, list[tuple[str | None, str | None]]] = {}

    def columns_of(sql: str) -> list[tuple[str | None, str | None]]:
        found = bindings.get(sql)
        if found is None:
            try:
                found = bind_columns(sql)
            except Exception:
                found = []
            if len(bindings) > _CACHE_SIZE:
                bindings.clear()
            bindings[sql] = found
        return found

    def one(value: Any, column: str | None) -> Any:
        if sensitive(column):
            return REDACTED
        if isinstance(value, str) and looks_like_password_hash(value):
            return REDACTED
        return safe(value)

    def row(params: Any, columns: list[tuple[str | None, str | None]]) -> Any:
        if params is None:
            return None
        if isinstance(params, dict):
            by_name = {name: column for column, name in columns if name is not None}
            return {
                str(key): REDACTED if sensitive(str(key)) else one(value, by_name.get(key))
                for key, value in params.items()
            }
        if not isinstance(params, (list, tuple)):
            return safe(params)
        count = len(columns)
        return [one(value, columns[i][0] if i < count else None) for i, value in enumerate(params)]

    def redactor(sql: str, params: Any, many: bool) -> Any:
        if params is None:
            return None
        columns = columns_of(sql) if isinstance(sql, str) else []
        if many:
            return [row(p, columns) for p in params]
        return row(params, columns)

    return redactor
