"""Real processes: `manage.py runserver` with the probe, `djangoscope record`, over 127.0.0.1."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from djangoscope.app.demo import free_port, wait_for_http

TOKEN = "e2e-token-0123456789"
DEMO_MANAGE = [sys.executable, "-m", "djangoscope.resources.demo.manage"]


class Proc:
    """A subprocess whose merged output is read on a thread, so tests can wait for a line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.args = args
        self.process = subprocess.Popen(
            args,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        for line in list(self.lines):
            if text in line:
                return line
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self.process.poll() is not None and self._queue.empty():
                    break
                continue
            if text in line:
                return line
        raise AssertionError(f"{text!r} not seen in output of {self.args}:\n" + self.output)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._reader.join(5)
        return self.process.returncode

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(5)


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory) -> Path:
    """A migrated, seeded demo database, shared by the e2e tests (pages keep counts stable)."""
    path = tmp_path_factory.mktemp("demo") / "bookshop.sqlite3"
    env = base_env(path)
    for args in (["migrate", "--noinput"], ["seed_bookshop"]):
        subprocess.run([*DEMO_MANAGE, *args], env=env, check=True, capture_output=True, timeout=120)
    return path


def base_env(db_path: Path, home: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGOSCOPE")}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "djangoscope.resources.demo.settings",
            "DJANGOSCOPE_DEMO_DB": str(db_path),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if home is not None:
        env["DJANGOSCOPE_HOME"] = str(home)
    return env


@pytest.fixture
def home(tmp_path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def start_record(tmp_path, home, demo_db) -> Iterator:
    procs: list[Proc] = []

    def start(out: Path, *extra: str, listen: str = "127.0.0.1:0", token: str = TOKEN) -> Proc:
        args = [sys.executable, "-m", "djangoscope.app.cli", "record", "--listen", listen]
        args += ["--out", str(out), "--token", token, *extra]
        proc = Proc(args, base_env(demo_db, home))
        procs.append(proc)
        line = proc.wait_for("listening on")
        proc.address = line.split("listening on ")[1].split(",")[0]
        return proc

    yield start
    for proc in procs:
        proc.stop()


@pytest.fixture
def start_server(home, demo_db) -> Iterator:
    procs: list[Proc] = []

    def start(address: str, token: str = TOKEN, *extra: str, **env_extra: str) -> Proc:
        port = free_port()
        env = base_env(demo_db, home)
        env.update({"DJANGOSCOPE_ADDRESS": address, "DJANGOSCOPE_TOKEN": token, **env_extra})
        proc = Proc([*DEMO_MANAGE, "runserver", f"127.0.0.1:{port}", *extra], env)
        procs.append(proc)
        proc.base = f"http://127.0.0.1:{port}"
        wait_for_http(proc.base + "/", process=proc.process)
        return proc

    yield start
    for proc in procs:
        proc.stop(signal.SIGTERM)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
