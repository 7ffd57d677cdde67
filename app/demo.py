"""The headless demo: the bundled bookshop under ``runserver`` with the probe, a collector
recording it, some traffic, and the report. ``make demo`` runs this.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

DEMO_SETTINGS = "djangoscope.resources.demo.settings"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def demo_env(collector_address: str, token: str, db_path: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": DEMO_SETTINGS,
            "DJANGOSCOPE_ADDRESS": collector_address,
            "DJANGOSCOPE_TOKEN": token,
            "DJANGOSCOPE_DEMO_DB": db_path,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the demo's manage.py (migrate, seed) and fail loudly with its output."""
    result = subprocess.run(
        [sys.executable, "-m", "djangoscope.resources.demo.manage", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result


def wait_for_http(url: str, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before serving")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:g} s")


def start_runserver(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "djangoscope.resources.demo.manage",
            "runserver",
            f"127.0.0.1:{port}",
            "--noreload",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_headless_demo(out: str | None = None, rounds: int = 1, keep_serving: bool = False) -> int:
    from djangoscope.app.core.report import build_report, format_report
    from djangoscope.app.core.store import SessionStore
    from djangoscope.app.ingest.record import SessionRecorder
    from djangoscope.app.ingest.server import Collector
    from djangoscope.resources.demo import traffic

    workdir = Path(tempfile.mkdtemp(prefix="djangoscope-demo-"))
    session_path = out or str(workdir / "demo.djscope")
    token = secrets.token_urlsafe(24)
    collector = Collector("127.0.0.1", 0, token=token)
    collector.start()
    store = SessionStore.create(session_path)
    recorder = SessionRecorder(collector, store, log=lambda text: print(text, flush=True))
    env = demo_env(collector.address, token, str(workdir / "bookshop.sqlite3"))
    print(f"djangoscope demo: collector on {collector.address}, session {session_path}", flush=True)
    print("djangoscope demo: migrating and seeding the bookshop ...", flush=True)
    manage(env, "migrate", "--noinput")
    manage(env, "seed_bookshop")
    port = free_port()
    server = start_runserver(env, port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(base + "/", process=server)
        print(f"djangoscope demo: bookshop serving on {base}/", flush=True)
        visits = []
        for _ in range(rounds):
            visits += traffic.drive(base)
        expected = len(visits) + 1  # the readiness probe is a request too
        deadline = time.monotonic() + 15
        while recorder.units < expected and time.monotonic() < deadline:
            recorder.drain(timeout=0.2)
        if keep_serving:
            print(f"djangoscope demo: browse {base}/ ; Ctrl+C to stop", flush=True)
            try:
                while server.poll() is None:
                    recorder.drain(timeout=0.5)
            except KeyboardInterrupt:
                pass
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            server.kill()
        time.sleep(0.2)
        collector.stop()
        recorder.drain_all()
        store.close()
    with SessionStore.open(session_path) as reader:
        report = build_report(reader)
    print()
    print(format_report(report), flush=True)
    print(f"djangoscope demo: {recorder.units} requests recorded in {session_path}", flush=True)
    print(f"djangoscope demo: read it again with: djangoscope report {session_path}", flush=True)
    return 0
