import os
import subprocess
import sys
from pathlib import Path

import psycopg

from stripesync import __version__
from stripesync.db.embedded import EmbeddedPostgres


def test_version_flag_prints_the_version():
    out = subprocess.run(
        [sys.executable, "-m", "stripesync", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert out.stdout.strip() == f"stripesync {__version__}"


def _db(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stripesync", "db", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_db_status_stop_and_url_on_a_stopped_server(pg_data_dir: Path) -> None:
    out = _db("status", "--data-dir", str(pg_data_dir))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "embedded PostgreSQL: not running (never started here)"
    assert f"data directory: {pg_data_dir}" in out.stdout

    out = _db("stop", "--data-dir", str(pg_data_dir))
    assert out.returncode == 0, out.stderr
    assert "was not running" in out.stderr

    out = _db("url", "--data-dir", str(pg_data_dir))
    assert out.returncode == 1  # a runtime condition, not bad usage
    assert out.stdout == ""
    assert out.stderr.strip() == (
        f"stripesync: embedded PostgreSQL in {pg_data_dir} is not running "
        "(`stripesync db start` starts it)"
    )

    # made once, then stopped: "not running", without the "never started" remark
    pg = EmbeddedPostgres(pg_data_dir, port=0, fast=True)
    pg.start()
    pg.stop()
    out = _db("status", "--data-dir", str(pg_data_dir))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "embedded PostgreSQL: not running"
    assert not EmbeddedPostgres(pg_data_dir).is_running()  # status started nothing

    assert _db("nonsense", "--data-dir", str(pg_data_dir)).returncode == 2
    assert _db().returncode == 2


def test_db_status_url_and_stop_on_a_running_server(pg_data_dir: Path) -> None:
    pg = EmbeddedPostgres(pg_data_dir, port=0, fast=True)
    pg.start()
    try:
        password = pg.password
        # the data directory from the environment, as every command takes it
        out = _db("status", env={"STRIPESYNC_DATA_DIR": str(pg_data_dir)})
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == "embedded PostgreSQL: running (ready)"
        assert f"pid: {pg.info.pid}" in lines
        assert f"port: 127.0.0.1:{pg.port}" in lines
        assert f"data directory: {pg_data_dir}" in lines
        assert f"url: {pg.socket_url}" in lines
        assert any(ln.startswith(f"tcp url: postgresql://postgres@127.0.0.1:{pg.port}/postgres")
                   for ln in lines)
        assert password not in out.stdout + out.stderr

        out = _db("url", "--data-dir", str(pg_data_dir))
        assert out.returncode == 0, out.stderr
        url = out.stdout.strip()
        assert url == pg.socket_url  # the URL the other commands print
        assert password not in out.stdout + out.stderr
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)

        pid = pg.info.pid
        out = _db("stop", "--data-dir", str(pg_data_dir))
        assert out.returncode == 0, out.stderr
        assert out.stderr.strip() == f"embedded PostgreSQL stopped (pid {pid}, {pg_data_dir})"
        assert not EmbeddedPostgres(pg_data_dir).is_running()
    finally:
        pg.stop()


def test_db_start_leaves_the_server_running(pg_data_dir: Path) -> None:
    out = _db("start", "--data-dir", str(pg_data_dir))
    assert out.returncode == 0, out.stderr
    assert out.stderr.startswith("embedded PostgreSQL started (pid ")
    pg = EmbeddedPostgres(pg_data_dir)
    assert pg.find_running() is not None
    assert out.stdout.strip() == pg.socket_url
    out = _db("start", "--data-dir", str(pg_data_dir))
    assert out.returncode == 0, out.stderr
    assert out.stderr.startswith("embedded PostgreSQL already running (pid ")
    assert _db("stop", "--data-dir", str(pg_data_dir)).returncode == 0
    assert not pg.is_running()
