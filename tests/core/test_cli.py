"""The `djangoscope` command's errors: clear one-liners and exit status 2, nothing lost."""

from __future__ import annotations

import socket
import sqlite3

from djangoscope.app.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_report_missing_file(capsys, tmp_path):
    code, _, err = run(capsys, "report", str(tmp_path / "nope.djscope"))
    assert code == 2
    assert err.startswith("djangoscope report: error: ") and "nope.djscope" in err


def test_report_garbage_file(capsys, tmp_path):
    path = tmp_path / "garbage.djscope"
    path.write_bytes(b"this is not sqlite at all" * 100)
    code, _, err = run(capsys, "report", str(path))
    assert code == 2 and "error:" in err and len(err.strip().splitlines()) == 1


def test_report_plain_sqlite_file(capsys, tmp_path):
    path = tmp_path / "other.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x)")
    code, _, err = run(capsys, "report", str(path))
    assert code == 2 and "not a djangoscope session" in err


def test_report_newer_schema(capsys, tmp_path):
    from djangoscope.app.core.store import SessionStore

    path = tmp_path / "new.djscope"
    SessionStore.create(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    code, _, err = run(capsys, "report", str(path))
    assert code == 2 and "newer djangoscope" in err


def test_report_empty_session_text_and_json(capsys, tmp_path):
    from djangoscope.app.core.store import SessionStore

    path = tmp_path / "empty.djscope"
    SessionStore.create(path).close()
    code, out, _ = run(capsys, "report", str(path))
    assert code == 0 and "0 request(s)" in out
    code, out, _ = run(capsys, "report", str(path), "--json")
    assert code == 0 and '"version": 1' in out


def test_record_refuses_a_busy_port(capsys, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run(
            capsys,
            "record",
            "--listen",
            f"127.0.0.1:{port}",
            "--out",
            str(tmp_path / "s"),
            "--token",
            "t",
            "--duration",
            "0.1",
        )
    assert code == 2 and "cannot listen" in err


def test_record_refuses_bad_address_and_non_loopback(capsys, tmp_path):
    out = str(tmp_path / "s")
    code, _, err = run(capsys, "record", "--listen", "nowhere", "--out", out, "--token", "t")
    assert code == 2 and "bad address" in err
    code, _, err = run(capsys, "record", "--listen", "0.0.0.0:0", "--out", out, "--token", "t")
    assert code == 2 and "--allow-remote" in err


def test_record_stops_after_duration(capsys, tmp_path):
    code, out, _ = run(
        capsys,
        "record",
        "--listen",
        "127.0.0.1:0",
        "--out",
        str(tmp_path / "s.djscope"),
        "--token",
        "t",
        "--duration",
        "0.3",
    )
    assert code == 0
    assert "listening on 127.0.0.1:" in out and "0.3 s elapsed; 0 requests" in out
