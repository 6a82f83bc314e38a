"""The embedded PostgreSQL: start, reuse, persistence, URLs, and clear errors."""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import sys
import time
from pathlib import Path

import platformdirs
import psycopg
import pytest

from stripesync.db import embedded
from stripesync.db.embedded import (
    SYSTEM_USER,
    EmbeddedPostgres,
    EmbeddedPostgresError,
    _run_as,
    default_data_dir,
)

REPO = Path(__file__).resolve().parents[2]


def _one_line(err: pytest.ExceptionInfo[EmbeddedPostgresError]) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_default_data_dir_is_the_user_data_dir() -> None:
    expected = Path(platformdirs.user_data_dir("stripesync", appauthor=False)) / "postgres"
    assert default_data_dir() == expected


def test_start_gives_socket_and_tcp_urls(pg_data_dir: Path) -> None:
    pg = EmbeddedPostgres(pg_data_dir, port=0, fast=True)
    try:
        url = pg.start()
        assert url == pg.tcp_url
        assert url.startswith("postgresql://postgres:")
        assert f"@127.0.0.1:{pg.port}/postgres" in url
        with psycopg.connect(pg.tcp_url) as conn:
            row = conn.execute(
                "SELECT current_setting('server_version_num')::int, inet_server_addr()::text,"
                " current_setting('fsync'), current_setting('TimeZone')"
            ).fetchone()
            assert row == (row[0], "127.0.0.1/32", "off", "UTC")
            assert row[0] >= 180000
        with psycopg.connect(pg.socket_url) as conn:
            assert conn.execute("SELECT inet_server_addr()").fetchone() == (None,)
        # TCP always asks for a password, even from the superuser.
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(pg.url_for(password="wrong"), connect_timeout=5)
    finally:
        pg.stop()
    assert not pg.is_running()
    pg.stop()  # stopping a stopped server is fine


def test_persistent_dir_keeps_data_port_and_password(pg_data_dir: Path) -> None:
    data_dir = pg_data_dir
    first = EmbeddedPostgres(data_dir, port=0)  # durable mode, as users get it
    url = first.start()
    try:
        with psycopg.connect(url) as conn:
            assert conn.execute("SHOW fsync").fetchone() == ("on",)
            conn.execute("CREATE TABLE kept (id int PRIMARY KEY, v text)")
            conn.execute("INSERT INTO kept VALUES (1, 'one')")
    finally:
        first.stop()
    assert not first.is_running()

    second = EmbeddedPostgres(data_dir, port=0)
    started = time.monotonic()
    url2 = second.start()
    assert time.monotonic() - started < 2.0  # warm start
    try:
        assert url2 == url  # same port (still free) and same password
        with psycopg.connect(url2) as conn:
            assert conn.execute("SELECT v FROM kept").fetchall() == [("one",)]
    finally:
        second.stop()


def test_another_process_reuses_the_running_server(pg_data_dir: Path) -> None:
    pg = EmbeddedPostgres(pg_data_dir, port=0, fast=True)
    url = pg.start()
    try:
        pid = pg.info.pid
        code = (
            "import json, time\n"
            "from stripesync.db.embedded import EmbeddedPostgres\n"
            "t = time.monotonic()\n"
            f"pg = EmbeddedPostgres({str(pg.data_dir)!r}, fast=True)\n"
            "url = pg.start()\n"
            "print(json.dumps([url, pg.info.pid, time.monotonic() - t]))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
        ).stdout
        other_url, other_pid, seconds = json.loads(out)
        assert (other_url, other_pid) == (url, pid)
        assert seconds < 1.0
        # The other process left it running: it does not stop the server on exit.
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pg.stop()


def test_socket_only_when_no_port(pg_data_dir: Path) -> None:
    pg = EmbeddedPostgres(pg_data_dir, fast=True)
    try:
        url = pg.start()
        assert url == pg.socket_url
        assert pg.port is None
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(EmbeddedPostgresError, match="does not listen on TCP") as err:
            _ = pg.tcp_url
        _one_line(err)
        # Asking for TCP now must not silently give a socket-only server.
        with pytest.raises(EmbeddedPostgresError, match="Unix socket only") as err:
            EmbeddedPostgres(pg.data_dir, port=0, fast=True).start()
        _one_line(err)
    finally:
        pg.stop()


def test_busy_port_is_a_clear_error(pg_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        pg = EmbeddedPostgres(pg_data_dir, port=port, fast=True)
        with pytest.raises(EmbeddedPostgresError) as err:
            pg.start()
        assert _one_line(err) == (
            f"TCP port {port} on 127.0.0.1 is already in use: choose another port"
        )
        # Lost race (the port was taken between our check and the server's bind): the
        # server's own complaint comes through, still on one line.
        monkeypatch.setattr(embedded, "_port_is_free", lambda port: True)
        with pytest.raises(EmbeddedPostgresError) as err:
            pg.start()
    message = _one_line(err)
    assert message.startswith(f"PostgreSQL could not start in {pg.data_dir}: FATAL: ")
    assert "could not create any TCP/IP sockets" in message
    assert 'could not bind IPv4 address "127.0.0.1": Address already in use' in message
    assert not pg.is_running()


def test_running_on_another_port_is_a_clear_error(pg_data_dir: Path) -> None:
    pg = EmbeddedPostgres(pg_data_dir, port=0, fast=True)
    pg.start()
    try:
        port = pg.port
        assert port is not None
        other = port + 1 if port < 65535 else port - 1
        with pytest.raises(EmbeddedPostgresError) as err:
            EmbeddedPostgres(pg.data_dir, port=other, fast=True).start()
        message = _one_line(err)
        assert f"already running on port {port}" in message
        assert "stop it first" in message
        # The same port, or any port, reuses it.
        assert EmbeddedPostgres(pg.data_dir, port=port, fast=True).start() == pg.url
        assert EmbeddedPostgres(pg.data_dir, port=0, fast=True).start() == pg.url
    finally:
        pg.stop()


def test_server_refusing_to_start_reports_the_log_line(pg_data_dir: Path) -> None:
    pg = EmbeddedPostgres(pg_data_dir, fast=True, settings={"shared_buffers": "lots"})
    with pytest.raises(EmbeddedPostgresError) as err:
        pg.start()
    message = _one_line(err)
    assert message.startswith(f"PostgreSQL could not start in {pg.data_dir}: ")
    assert 'contains errors: invalid value for parameter "shared_buffers": "lots"' in message
    assert str(pg.log_path) in message


def test_directory_that_is_not_a_data_dir(pg_data_dir: Path) -> None:
    pgdata = pg_data_dir / "pgdata"
    pgdata.mkdir(parents=True)
    (pgdata / "notes.txt").write_text("not postgres")
    with pytest.raises(EmbeddedPostgresError) as err:
        EmbeddedPostgres(pg_data_dir).start()
    assert "is not a PostgreSQL data directory" in _one_line(err)


def test_data_dir_of_another_major_version(pg_data_dir: Path) -> None:
    pgdata = pg_data_dir / "pgdata"
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("16\n")
    with pytest.raises(EmbeddedPostgresError) as err:
        EmbeddedPostgres(pg_data_dir).start()
    assert "was made by PostgreSQL 16, this server is PostgreSQL 18" in _one_line(err)


def test_lost_password_file_is_replaced(pg_data_dir: Path) -> None:
    pg = EmbeddedPostgres(pg_data_dir, port=0, fast=True)
    old_url = pg.start()
    try:
        (pg.data_dir / "superuser-password").unlink()
        again = EmbeddedPostgres(pg.data_dir, port=0, fast=True)
        new_url = again.start()
        assert new_url != old_url
        assert (pg.data_dir / "superuser-password").stat().st_mode & 0o777 == 0o600
        with psycopg.connect(new_url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pg.stop()


def _start_query_stop(data_dir: Path) -> tuple[int, int]:
    pg = EmbeddedPostgres(data_dir, port=0, fast=True)
    url = pg.start()
    try:
        with psycopg.connect(url) as conn:
            conn.execute("SELECT 1")
        return os.geteuid(), pg.pgdata.stat().st_uid
    finally:
        pg.stop()


def test_runs_as_a_normal_user_too(pg_data_dir: Path) -> None:
    """Not as root, the server runs as the calling user (no user switch).

    As root (where the rest of the suite exercises the switch to SYSTEM_USER), a forked
    child drops to an unprivileged user first; forking avoids needing that user to be
    able to execute this Python, which may live under /root.
    """
    data_dir = pg_data_dir
    if os.geteuid() != 0:
        euid, owner = _start_query_stop(data_dir)
        assert owner == euid
        return

    user = _run_as()  # creates SYSTEM_USER if needed
    assert pwd.getpwuid(user.uid).pw_name == SYSTEM_USER
    data_dir.mkdir()
    os.chown(data_dir, user.uid, user.gid)
    data_dir.parent.chmod(0o711)  # made private by mkdtemp
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(user.gid)
            os.setuid(user.uid)
            euid, owner = _start_query_stop(data_dir)
            os.write(write_end, f"{euid} {owner}".encode())
            code = 0
        except BaseException as err:
            os.write(write_end, f"{type(err).__name__}: {err}".encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        out = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    euid, owner = map(int, out.split())
    assert euid == user.uid
    assert owner == user.uid


def test_start_says_whether_it_started_the_server_or_found_it_running(
    pg_data_dir: Path,
) -> None:
    first = EmbeddedPostgres(pg_data_dir, port=0, fast=True)
    assert first.find_running() is None
    first.start()
    try:
        assert first.started
        again = EmbeddedPostgres(pg_data_dir, port=0, fast=True)
        again.start()
        assert not again.started  # found running: a caller leaves it running
        assert again.url == first.url
        # find_running() starts nothing and gives the URLs of the running server
        found = EmbeddedPostgres(pg_data_dir)
        info = found.find_running()
        assert info is not None and info.pid == first.info.pid
        assert found.socket_url == first.socket_url
    finally:
        first.stop()
    assert EmbeddedPostgres(pg_data_dir).find_running() is None
    restarted = EmbeddedPostgres(pg_data_dir, port=0, fast=True)
    restarted.start()
    try:
        assert restarted.started
    finally:
        restarted.stop()
