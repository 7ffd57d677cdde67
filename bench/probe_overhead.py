"""What does the probe cost per request and per query?

Two long-lived worker processes serve the demo bookshop in-process (Django's WSGIHandler, no
HTTP): one without the probe (the baseline, ``DJANGOSCOPE_DEMO_NO_PROBE=1``) and one with it,
streaming to a live ``djangoscope record`` collector. The driver interleaves rounds (A, B, A,
B, ...) so both see the same machine conditions, and reports per page the median time per
request of each, their ratio, and the microseconds the probe adds per query.

Run: ``make bench`` or ``.venv/bin/python bench/probe_overhead.py [--rounds 15] [--requests 20]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAGES = {"/catalogue/": 201, "/many/": 500}
TOKEN = "bench-token"


class Worker:
    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "_worker.py")],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def ask(self, **command: object) -> dict:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker died with {self.process.wait()}")
        return json.loads(line)

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(30)


class Discard:
    """A live collector in this process that decodes every unit and drops it."""

    def __init__(self) -> None:
        import threading

        from djangoscope.app.ingest.server import Collector

        self.collector = Collector("127.0.0.1", 0, token=TOKEN)
        self.collector.start()
        self.address = self.collector.address
        self._running = True
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        import queue

        while self._running:
            try:
                self.collector.events.get(timeout=0.2)
            except queue.Empty:
                pass

    def stop(self) -> None:
        self._running = False
        self.collector.stop()


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=20, help="requests per round and page")
    parser.add_argument(
        "--collector",
        choices=("record", "discard", "none"),
        default="record",
        help="record: a real `djangoscope record` subprocess writing SQLite (default); discard: "
        "an in-process collector that decodes and drops units; none: no collector at all "
        "(the probe's request-thread cost alone, its ring dropping the oldest units)",
    )
    args = parser.parse_args()

    from djangoscope.app.demo import demo_env, manage

    work = Path(tempfile.mkdtemp(prefix="djangoscope-bench-"))
    session = work / "bench.djscope"
    record = discard = None
    if args.collector == "record":
        record = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "djangoscope.app.cli",
                "record",
                "--listen",
                "127.0.0.1:0",
                "--out",
                str(session),
                "--token",
                TOKEN,
                "--quiet",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert record.stdout is not None
        first = record.stdout.readline()
        address = first.split("listening on ")[1].split(",")[0]
    elif args.collector == "discard":
        discard = Discard()
        address = discard.address
    else:
        from djangoscope.app.demo import free_port

        address = f"127.0.0.1:{free_port()}"  # nothing listens there
    env = demo_env(address, TOKEN, str(work / "bookshop.sqlite3"))
    manage(env, "migrate", "--noinput")
    manage(env, "seed_bookshop")
    base_env = {**env, "DJANGOSCOPE_DEMO_NO_PROBE": "1"}
    baseline, probed = Worker(base_env), Worker(env)
    try:
        for worker in (baseline, probed):
            for path, queries in PAGES.items():
                answer = worker.ask(path=path, n=3)
                if answer["queries"] not in (None, queries):
                    raise RuntimeError(f"{path}: expected {queries} queries, ran {answer}")
        if args.collector != "none" and not probed.ask(wait_connected=10)["connected"]:
            raise RuntimeError("the probe did not connect to the collector")
        results: dict[str, dict[str, list[float]]] = {p: {"base": [], "probe": []} for p in PAGES}
        for _ in range(args.rounds):
            for path in PAGES:
                results[path]["base"].append(baseline.ask(path=path, n=args.requests)["seconds"])
                results[path]["probe"].append(probed.ask(path=path, n=args.requests)["seconds"])
        if args.collector != "none":
            probed.ask(flush=10)  # the last batch waits for a quiet moment: send it now
        stats = probed.ask(stats=True)
        time.sleep(0.5)  # let the collector finish the last units before reading its CPU time
        collector_cpu = _cpu_seconds(record.pid) if record is not None else None
    finally:
        baseline.close()
        probed.close()
        time.sleep(0.5)
        if record is not None:
            record.terminate()
            record.wait(30)
        if discard is not None:
            discard.stop()

    print(
        f"djangoscope probe overhead: {args.rounds} interleaved rounds x {args.requests} "
        f"requests, medians; collector: {args.collector}; Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"{'page':<22} {'queries':>7} {'baseline ms':>12} {'probe ms':>9} {'ratio':>6} "
        f"{'added us/query':>15}"
    )
    for path, queries in PAGES.items():
        base = statistics.median(results[path]["base"]) / args.requests
        probe = statistics.median(results[path]["probe"]) / args.requests
        added = (probe - base) / queries * 1e6
        print(
            f"{path:<22} {queries:7d} {base * 1e3:12.2f} {probe * 1e3:9.2f} "
            f"{probe / base:6.2f}x {added:15.1f}"
        )
    if collector_cpu is not None and stats["sent"]:
        print(
            f"collector: {collector_cpu * 1e3 / stats['sent']:.2f} ms CPU per request "
            f"({stats['sent']} requests, {collector_cpu:.2f} s total, start-up included)"
        )
    print(f"sender: sent {stats['sent']}, dropped {stats['dropped']}, errors {stats['errors']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
