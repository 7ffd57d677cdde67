"""Which encoding for UNIT frames? stdlib json vs orjson vs msgpack, on a realistic message.

Run: .venv/bin/python bench/encoding.py   (orjson/msgpack are measured when installed:
.venv/bin/pip install orjson msgpack). Prints the median of several rounds per encoder.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any


def sample_unit(queries: int = 201) -> dict[str, Any]:
    """A UNIT like the demo's N+1 page: one list query, then one author query per book."""
    stack = [
        {"file": "/srv/shop/bookshop/views.py", "line": 42, "func": "book_list", "app": True},
        {
            "file": "/venv/django/template/base.py",
            "line": 1008,
            "func": "Node.render_annotated",
            "app": False,
        },
    ]
    qs = []
    for i in range(queries):
        qs.append(
            {
                "span": 1,
                "alias": "default",
                "vendor": "sqlite",
                "sql": 'SELECT "bookshop_author"."id", "bookshop_author"."name", '
                '"bookshop_author"."email", "bookshop_author"."bio" FROM "bookshop_author" '
                'WHERE "bookshop_author"."id" = %s LIMIT 21',
                "params": [i % 20 + 1],
                "many": False,
                "batch": None,
                "start_ns": 1000 * i,
                "duration_ns": 61000,
                "rowcount": -1,
                "atomic": False,
                "savepoint_depth": 0,
                "stack": "s0",
                "template": ["bookshop/book_list.html", 12],
                "orm": {
                    "op": "fk",
                    "model": "bookshop.Book",
                    "field": "author",
                    "target": "bookshop.Author",
                    "instance": f"bookshop.Book:{i}",
                },
                "error": None,
            }
        )
    spans = [
        {
            "id": i + 2,
            "parent": 1,
            "kind": "sql",
            "name": "SELECT ...",
            "start_ns": 1000 * i,
            "duration_ns": 61000,
            "ref": i,
        }
        for i in range(queries)
    ]
    return {
        "kind": "http",
        "id": "1-1",
        "pid": 1,
        "request": {"method": "GET", "path": "/books/"},
        "response": {"status": 200},
        "spans": spans,
        "queries": qs,
        "cache": [],
        "stacks": {"s0": stack},
        "instances": {"bookshop.Book": 100},
    }


def measure(fn: Callable[[], Any], rounds: int = 7, number: int = 20) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return statistics.median(times)


def main() -> None:
    message = sample_unit()
    encoders: dict[str, tuple[Callable[[], bytes], Callable[[bytes], Any]]] = {
        "json (stdlib)": (
            lambda: json.dumps(message, separators=(",", ":")).encode(),
            lambda b: json.loads(b),
        )
    }
    try:
        import orjson

        encoders["orjson"] = (lambda: orjson.dumps(message), orjson.loads)
    except ImportError:
        print("orjson not installed: skipped")
    try:
        import msgpack

        encoders["msgpack"] = (lambda: msgpack.packb(message), msgpack.unpackb)
    except ImportError:
        print("msgpack not installed: skipped")
    print(f"UNIT with {len(message['queries'])} queries")
    print(f"{'encoder':<15} {'encode ms':>10} {'decode ms':>10} {'bytes':>9}")
    for name, (encode, decode) in encoders.items():
        data = encode()
        enc = measure(encode)
        dec = measure(lambda d=data, f=decode: f(d))
        print(f"{name:<15} {enc * 1e3:10.3f} {dec * 1e3:10.3f} {len(data):9d}")


if __name__ == "__main__":
    main()
