"""The ``djangoscope`` command: ``app``, ``demo``, ``record`` and ``report``.

Headless commands (``record``, ``report``, ``demo --headless``) need only the ``[cli]`` extra and
run without a display, for CI.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from djangoscope.probe import wire

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def _print(text: str) -> None:
    print(text, flush=True)


def _error(command: str, message: str) -> int:
    print(f"djangoscope {command}: error: {message}", file=sys.stderr, flush=True)
    return EXIT_USAGE


class _StopFlag:
    """Set by SIGINT/SIGTERM; the loops poll it so shutdown always runs to completion."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def install(self) -> None:
        signals = (signal.SIGINT, signal.SIGTERM)
        self._previous = {signum: signal.signal(signum, self._handler) for signum in signals}

    def restore(self) -> None:
        for signum, handler in getattr(self, "_previous", {}).items():
            signal.signal(signum, handler)

    def _handler(self, signum: int, frame: Any) -> None:
        self.reason = signal.Signals(signum).name

    def __bool__(self) -> bool:
        return self.reason is not None


def cmd_record(args: argparse.Namespace) -> int:
    from djangoscope.app.core.store import SessionError, SessionStore
    from djangoscope.app.ingest.record import SessionRecorder
    from djangoscope.app.ingest.server import Collector, CollectorError

    try:
        host, port = wire.parse_address(args.listen)
    except ValueError as exc:
        return _error("record", str(exc))
    token = args.token or wire.ensure_token()
    try:
        store = SessionStore.create(args.out, max_bytes=args.max_size_mb * 1024 * 1024 or None)
    except SessionError as exc:
        return _error("record", str(exc))
    try:
        collector = Collector(host, port, token=token, allow_remote=args.allow_remote)
        collector.start()
    except CollectorError as exc:
        store.close()
        return _error("record", str(exc))
    stop = _StopFlag()
    stop.install()
    log = (lambda text: None) if args.quiet else _print
    recorder = SessionRecorder(collector, store, log=log)
    _print(f"djangoscope record: listening on {collector.address}, writing {args.out}")
    if not args.token:
        _print(f"djangoscope record: probes authenticate with the token in {wire.token_path()}")
    started = time.monotonic()
    reason = "stopped"
    try:
        while True:
            recorder.drain(timeout=0.2)
            if stop:
                reason = f"stopped by {stop.reason}"
                break
            if args.requests and recorder.units >= args.requests:
                reason = f"recorded {args.requests} requests"
                break
            if args.duration and time.monotonic() - started >= args.duration:
                reason = f"{args.duration:g} s elapsed"
                break
        collector.stop()
        recorder.drain_all()  # everything received before the stop is written
    except SessionError as exc:
        return _error("record", f"{exc} (requests recorded so far are kept in {args.out})")
    finally:
        collector.stop()
        store.close()
        stop.restore()
    _print(
        f"djangoscope record: {reason}; {recorder.units} requests from "
        f"{len(recorder.processes)} process(es) saved to {args.out}"
    )
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from djangoscope.app.core.report import build_report, format_report
    from djangoscope.app.core.store import SessionError, SessionStore

    try:
        with SessionStore.open(args.session) as store:
            report = build_report(store)
    except SessionError as exc:
        return _error("report", str(exc))
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_report(report))
    sys.stdout.flush()
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from djangoscope.app.demo import run_headless_demo

    return run_headless_demo(out=args.out, rounds=args.rounds, keep_serving=args.serve)


def cmd_app(args: argparse.Namespace) -> int:
    return _error(
        "app",
        "the desktop window is not part of this release yet; record headless with "
        "`djangoscope record` and read sessions with `djangoscope report`",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="djangoscope",
        description="A profiler for Django dev servers: every query, cache call and template.",
    )
    sub = parser.add_subparsers(dest="command")

    app = sub.add_parser("app", help="the desktop app (collects live)")
    app.add_argument("--open", metavar="SESSION", help="open a saved session")
    app.set_defaults(func=cmd_app)

    record = sub.add_parser("record", help="collect headless into a session file")
    record.add_argument(
        "--listen",
        default=wire.DEFAULT_ADDRESS,
        metavar="HOST:PORT",
        help=f"where probes connect (default {wire.DEFAULT_ADDRESS}; port 0 picks a free one)",
    )
    record.add_argument("--out", required=True, metavar="SESSION", help="session file to write")
    record.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    record.add_argument("--requests", type=int, metavar="N", help="stop after N requests")
    record.add_argument("--token", help="token probes must prove (default: the token file)")
    record.add_argument(
        "--allow-remote", action="store_true", help="allow listening on a non-loopback address"
    )
    record.add_argument(
        "--max-size-mb",
        type=int,
        default=0,
        metavar="MB",
        help="cap the session file; the oldest requests are pruned beyond it (0: no cap)",
    )
    record.add_argument("--quiet", action="store_true", help="no line per request")
    record.set_defaults(func=cmd_record)

    report = sub.add_parser("report", help="summarise a session file")
    report.add_argument("session", metavar="SESSION")
    report.add_argument("--json", action="store_true", help="machine-readable output")
    report.set_defaults(func=cmd_report)

    demo = sub.add_parser("demo", help="run the bundled demo site with the probe")
    demo.add_argument("--out", metavar="SESSION", help="where to save the demo session")
    demo.add_argument("--rounds", type=int, default=1, help="times to visit every page")
    demo.add_argument(
        "--serve", action="store_true", help="keep the site running after the traffic"
    )
    demo.add_argument(
        "--headless", action="store_true", help="no window: record and print the report"
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["app", *(argv or [])])
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
