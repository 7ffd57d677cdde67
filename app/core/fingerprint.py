"""SQL fingerprints: one normalized text per query *shape*, so repeats can be counted.

Two queries that differ only in their parameters, literals, comments, whitespace or the length
of an ``IN (...)`` list get the same normalized text and the same :func:`fingerprint`. That is
what "similar queries" (the N+1 signal) and the suggestion engine group on.

Speed matters: one session holds hundreds of thousands of queries, mostly the same few hundred
SQL strings. The work is therefore split in two cached steps:

1. :func:`_shape_key` is a single regex pass over the raw SQL that already removes everything
   that varies between executions (literals, placeholders, comments, whitespace runs, ``IN``
   lists, multi-row ``VALUES``). Raw SQL with inline literals (``WHERE id = 42``) thus maps many
   distinct strings onto one key.
2. :func:`_analyse` runs sqlparse's lexer on that key (once per shape) to upper-case keywords and
   find the operation and tables.

Both are ``lru_cache``d, so a repeated query costs one dict lookup.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import NamedTuple

from sqlparse import tokens as T
from sqlparse.lexer import Lexer

__all__ = ["fingerprint", "normalize", "operation", "tables"]

#: Operations :func:`operation` returns; anything else is ``"OTHER"``.
OPERATIONS = (
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "SAVEPOINT",
    "RELEASE",
    "ROLLBACK",
    "BEGIN",
    "COMMIT",
    "OTHER",
)

#: Transaction-control operations: never "duplicates" or "similar", nothing to fix there.
TRANSACTION_OPERATIONS = frozenset({"SAVEPOINT", "RELEASE", "ROLLBACK", "BEGIN", "COMMIT"})

# One alternation, tried left to right at each position. Identifiers are matched only to be
# skipped (so digits inside "table1" or `t2` stay); every other branch rewrites its match.
_LEXEME = re.compile(
    r"""
      (?P<ident>"(?:[^"]|"")*"|`(?:[^`]|``)*`)           # quoted identifier: keep
    | (?P<string>'(?:[^']|'')*')                         # string literal
    | (?P<comment>--[^\n]*|/\*.*?\*/)                    # comment
    | (?P<param>%\(\w+\)s|%s|\$\d+|(?<![\w:]):(?!:)\w+)  # %s, %(name)s, $1, :name
    | (?P<number>\b0x[0-9a-f]+\b|(?:\b\d+(?:\.\d*)?|\B\.\d+)(?:e[+-]?\d+)?\b)
    | (?P<space>\s+)
    """,
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)

_PLACEHOLDER_GROUP = r"\(\s*\?(?:\s*,\s*\?)*\s*\)"
_IN_LIST = re.compile(r"\b(IN)\s*" + _PLACEHOLDER_GROUP, re.IGNORECASE)
_VALUES_ROWS = re.compile(
    r"\b(VALUES)\s*" + _PLACEHOLDER_GROUP + r"(?:\s*,\s*" + _PLACEHOLDER_GROUP + r")*",
    re.IGNORECASE,
)

_REPLACEMENT = {"string": "?", "param": "?", "number": "?", "comment": " ", "space": " "}


def _rewrite(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind == "ident" or kind is None:
        return match.group()
    return _REPLACEMENT[kind]


@lru_cache(maxsize=8192)
def _shape_key(sql: str) -> str:
    """Everything that varies between executions removed; the cache key of :func:`_analyse`."""
    text = _LEXEME.sub(_rewrite, sql)
    text = _IN_LIST.sub(lambda m: m.group(1).upper() + " (...)", text)
    text = _VALUES_ROWS.sub(lambda m: m.group(1).upper() + " (...)", text)
    return text.strip().rstrip(";").strip()


class _Shape(NamedTuple):
    normalized: str
    fingerprint: str
    operation: str
    tables: tuple[str, ...]


_WHITESPACE = (T.Whitespace, T.Newline, T.Text.Whitespace)
_TABLE_KEYWORDS = frozenset({"FROM", "INTO", "UPDATE", "TABLE"})
_TRANSACTION_WORDS = {
    "BEGIN": "BEGIN",
    "START": "BEGIN",
    "COMMIT": "COMMIT",
    "END": "COMMIT",
    "SAVEPOINT": "SAVEPOINT",
    "RELEASE": "RELEASE",
    "ROLLBACK": "ROLLBACK",
}
_DML = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})
_NOT_TABLES = frozenset({"SELECT", "LATERAL", "WHERE", "SET", "VALUES", "DEFAULT", "ON", "USING"})


# Canonical spacing, so "id=1" and "id = 1" are one shape: one space between tokens except
# around these.
_NO_SPACE_AFTER = frozenset({"(", ".", "::", "["})
_NO_SPACE_BEFORE = frozenset({")", ",", ".", "::", ";", "]"})


@lru_cache(maxsize=4096)
def _analyse(key: str) -> _Shape:
    """Lex one shape key with sqlparse: keyword case, canonical spacing, operation, tables."""
    significant: list[tuple[object, str]] = []
    for ttype, value in Lexer.get_default_instance().get_tokens(key):
        if ttype in _WHITESPACE or ttype in T.Comment:
            continue
        if ttype in T.Keyword:
            value = " ".join(value.upper().split())
        significant.append((ttype, value))
    out: list[str] = []
    previous: tuple[object, str] | None = None
    for ttype, value in significant:
        if previous is not None and not (
            previous[1] in _NO_SPACE_AFTER
            or value in _NO_SPACE_BEFORE
            # A function call: sqlparse lexes "COUNT(" (no space) as a name.
            or (value == "(" and previous[0] in T.Name)
        ):
            out.append(" ")
        out.append(value)
        previous = (ttype, value)
    normalized = "".join(out)
    digest = hashlib.sha1(normalized.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return _Shape(normalized, digest, _operation(significant), tuple(_tables(significant)))


def _operation(toks: list[tuple[object, str]]) -> str:
    depth = 0
    first = True
    with_clause = False
    for _ttype, value in toks:
        if value == "(":
            depth += 1
            continue
        if value == ")":
            depth -= 1
            continue
        word = value.upper()
        if first:
            first = False
            if word in _DML:
                return word
            if word in _TRANSACTION_WORDS:
                return _TRANSACTION_WORDS[word]
            if word != "WITH":
                return "OTHER"
            with_clause = True
            continue
        if with_clause and depth <= 0 and word in _DML:
            return word
    return "OTHER"


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in '"`':
        quote = value[0]
        return value[1:-1].replace(quote * 2, quote)
    return value


def _is_name(ttype: object, value: str) -> bool:
    return ttype in T.Name or ttype in T.String.Symbol or (ttype in T.Keyword and " " not in value)


def _tables(toks: list[tuple[object, str]]) -> list[str]:
    found: list[str] = []
    # One entry per open parenthesis: True when it is a function call such as
    # EXTRACT(YEAR FROM ...) or TRIM(... FROM ...), whose FROM names no table.
    in_call: list[bool] = []
    i, n = 0, len(toks)
    while i < n:
        ttype, value = toks[i]
        previous = toks[i - 1][1] if i else ""
        i += 1
        if value == "(":
            following = toks[i][1] if i < n else ""
            in_call.append(previous != "" and toks[i - 2][0] in T.Name and following not in _DML)
            continue
        if value == ")":
            if in_call:
                in_call.pop()
            continue
        if not (ttype in T.Keyword and (value in _TABLE_KEYWORDS or value.endswith("JOIN"))):
            continue
        if (value == "FROM" and in_call and in_call[-1]) or (
            value == "UPDATE" and previous in ("FOR", "DO", "KEY")
        ):
            continue
        if i < n and toks[i][1] in ("IF NOT EXISTS", "IF EXISTS", "ONLY"):
            i += 1
        is_from = value == "FROM"
        while i < n and _is_name(*toks[i]) and toks[i][1] not in _NOT_TABLES:
            # schema.table: keep the qualified name, unquoted part by part.
            parts = [_unquote(toks[i][1])]
            i += 1
            while i + 1 < n and toks[i][1] == "." and _is_name(*toks[i + 1]):
                parts.append(_unquote(toks[i + 1][1]))
                i += 2
            name = ".".join(parts)
            if name not in found:
                found.append(name)
            if not is_from:
                break
            # Optional alias, then a comma continues the FROM list.
            if i < n and toks[i][1] == "AS":
                i += 1
            if i < n and (toks[i][0] in T.Name or toks[i][0] in T.String.Symbol):
                i += 1
            if i < n and toks[i][1] == ",":
                i += 1
                continue
            break
    return found


def normalize(sql: str) -> str:
    """The query's shape: comments gone, one canonical spacing, literals and placeholders as
    ``?``, ``IN (?, ?, …)`` and multi-row ``VALUES`` as ``(...)``, keywords upper-cased."""
    return _analyse(_shape_key(sql)).normalized


def fingerprint(sql: str) -> str:
    """A short stable hash (16 hex digits) of :func:`normalize`; equal shapes, equal hashes."""
    return _analyse(_shape_key(sql)).fingerprint


def operation(sql: str) -> str:
    """The statement's verb, one of :data:`OPERATIONS` (``WITH … SELECT`` is a SELECT)."""
    return _analyse(_shape_key(sql)).operation


def tables(sql: str) -> list[str]:
    """Tables named after FROM/JOIN/INTO/UPDATE/TABLE, unquoted, in order of appearance."""
    return list(_analyse(_shape_key(sql)).tables)


def analyse(sql: str) -> tuple[str, str, str, tuple[str, ...]]:
    """(normalized, fingerprint, operation, tables) in one cached call, for the store's hot path."""
    return _analyse(_shape_key(sql))
