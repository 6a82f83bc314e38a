"""The suite's PostgreSQL fixtures: pg_server and database_url."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.plugins.postgres import PgServer

REPO = Path(__file__).resolve().parents[2]

_seen_databases: list[str] = []


def test_pg_server_listens_on_tcp(pg_server: PgServer) -> None:
    assert pg_server.host == "127.0.0.1"
    assert isinstance(pg_server.port, int)
    assert pg_server.port > 0
    info = conninfo_to_dict(pg_server.admin_url)
    assert (info["host"], int(info["port"]), info["user"]) == (
        "127.0.0.1",
        pg_server.port,
        "postgres",
    )
    with psycopg.connect(pg_server.admin_url) as conn:
        row = conn.execute("SELECT current_user, current_setting('fsync')").fetchone()
        assert row == ("postgres", "off")  # fast mode


def test_database_url_is_fresh_and_empty(database_url: str, pg_server: PgServer) -> None:
    info = conninfo_to_dict(database_url)
    assert int(info["port"]) == pg_server.port
    with psycopg.connect(database_url) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        assert name is not None
        tables = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
        ).fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE leftover (id int)")  # must not leak into later tests
    assert name[0] != "postgres"
    _seen_databases.append(name[0])


def test_database_url_is_dropped_afterwards(database_url: str, pg_server: PgServer) -> None:
    assert _seen_databases, "runs after test_database_url_is_fresh_and_empty"
    names = {row[0] for row in pg_server.execute("SELECT datname FROM pg_database")}
    assert _seen_databases[0] not in names
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass('leftover')").fetchone() == (None,)
        assert conn.execute("SELECT current_database()").fetchone() != (_seen_databases[0],)


async def test_database_url_works_with_async_psycopg(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute("SELECT 40 + 2")
        assert await cur.fetchone() == (42,)


def test_drop_database_ends_open_sessions(pg_server: PgServer) -> None:
    url = pg_server.create_database()
    name = conninfo_to_dict(url)["dbname"]
    conn = psycopg.connect(url)
    try:
        pg_server.drop_database(name)
        assert pg_server.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]) == []
    finally:
        conn.close()


@pytest.mark.parametrize("method", ["scram-sha-256", "md5"])
def test_role_authenticates_over_tcp_with_its_method(
    pg_server: PgServer, database_url: str, method: str
) -> None:
    role = pg_server.create_role(password="s3cret pass", method=method)  # type: ignore[arg-type]
    stored = pg_server.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [role.name])
    prefix = "SCRAM-SHA-256$" if method == "scram-sha-256" else "md5"
    assert stored[0][0].startswith(prefix)

    dbname = conninfo_to_dict(database_url)["dbname"]
    # require_auth makes libpq refuse any other handshake than the one named.
    with psycopg.connect(role.url(dbname), require_auth=method) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (role.name,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg_server.url(dbname, user=role.name, password="wrong"))
    # Without a password, TCP is refused (only the superuser's URL carries one).
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_server.url(dbname, user=role.name), require_auth=method)


def test_create_role_again_resets_the_password(pg_server: PgServer) -> None:
    role = pg_server.create_role(pg_server.unique_name("again"), "first")
    again = pg_server.create_role(role.name, "second", method="md5")
    with psycopg.connect(again.url(), require_auth="md5") as conn:
        assert conn.execute("SELECT current_user").fetchone() == (role.name,)
    pg_server.drop_role(role.name)
    assert pg_server.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role.name]) == []


def test_superuser_role(pg_server: PgServer) -> None:
    role = pg_server.create_role(superuser=True)
    with psycopg.connect(role.url()) as conn:
        assert conn.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone() == (True,)


def test_pg_server_fails_loudly_when_postgres_cannot_start(tmp_path: Path) -> None:
    """A suite whose PostgreSQL does not start reports errors, never skips."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text(
        "from stripesync.db import embedded\n"
        "def _broken(self):\n"
        "    raise embedded.EmbeddedPostgresError('no luck today')\n"
        "embedded.EmbeddedPostgres.start = _broken\n"
    )
    (tmp_path / "test_x.py").write_text(
        "def test_a(database_url):\n    pass\n\ndef test_b(pg_server):\n    pass\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.plugins.postgres", "-rA"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "2 errors" in proc.stdout
    assert "skipped" not in proc.stdout
    assert "embedded PostgreSQL did not start: no luck today" in proc.stdout
