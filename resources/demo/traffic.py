"""Drive the demo over HTTP, so a profiler attached to it has every problem to show.

    python -m djangoscope.resources.demo.traffic http://127.0.0.1:8000 --rounds 3

Standard library only (``make demo`` runs it next to the dev server); needs no Django settings.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

from djangoscope.resources.demo.pages import all_paths


def fetch(url: str, timeout: float = 30.0) -> int:
    """GET ``url`` and return the HTTP status; error statuses are returned, not raised."""
    request = urllib.request.Request(url, headers={"User-Agent": "djangoscope-demo-traffic"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        try:
            exc.read()
        finally:
            exc.close()
        return int(exc.code)


def drive(base_url: str, rounds: int = 1, timeout: float = 30.0) -> list[tuple[str, int]]:
    """GET the index, every page and every fixed twin ``rounds`` times; ``(path, status)`` each.

    Connection errors propagate: a server that is not up is the caller's problem to report.
    """
    base = base_url.rstrip("/")
    results: list[tuple[str, int]] = []
    for _ in range(rounds):
        for path in all_paths():
            results.append((path, fetch(base + path, timeout=timeout)))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url", nargs="?", default="http://127.0.0.1:8000")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        results = drive(args.base_url, rounds=args.rounds)
    except OSError as exc:
        print(f"cannot reach {args.base_url}: {exc}", file=sys.stderr)
        return 1
    for path, status in results:
        print(f"{status} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
