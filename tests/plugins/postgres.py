"""pytest plugin: a real PostgreSQL for the suite.

Fixtures:

- ``pg_server`` (session): a throwaway embedded PostgreSQL 18 in a temporary directory,
  in fast mode (no fsync), on TCP ``127.0.0.1:<free port>`` and its Unix socket. Yields a
  :class:`PgServer` (``admin_url``, ``host``, ``port``, ``url()``, ``create_role()``,
  ``start_standby()``,
  ``create_database()``, ``drop_database()``, ``execute()``). Stopped at the end.
- ``database_url`` (function): the TCP URL (as the superuser) of a fresh, empty database
  made for this test from ``template0``, dropped afterwards.
- ``pg_data_dir`` (function): a fresh path for a test's own ``EmbeddedPostgres`` data
  directory (outside pytest's tmp tree, see ``_private_dir``); any server left running
  there is stopped afterwards and the directory removed.

If PostgreSQL cannot start, every test that needs it fails with the reason: it is never
skipped.

Authentication over TCP (see ``stripesync.db.embedded``): ``md5`` lines for 127.0.0.1, so
a role made with ``create_role(method="scram-sha-256")`` authenticates with SCRAM and
one made with ``method="md5"`` with MD5; the superuser's URL carries its password. The
Unix socket is ``trust``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg
import pytest
from psycopg import sql

from stripesync.db.embedded import SUPERUSER, EmbeddedPostgres, EmbeddedPostgresError

AuthMethod = Literal["scram-sha-256", "md5"]


@dataclass(frozen=True)
class PgRole:
    """A login role made by :meth:`PgServer.create_role`."""

    name: str
    password: str
    method: AuthMethod
    server: PgServer

    def url(self, database: str = "postgres") -> str:
        """TCP URL that logs in as this role with its password."""
        return self.server.url(database, user=self.name, password=self.password)


class PgServer:
    """What the ``pg_server`` fixture yields."""

    def __init__(self, server: EmbeddedPostgres) -> None:
        self.server = server
        port = server.port
        assert port is not None, "the test server must listen on TCP"
        self.host: str = server.host
        self.port: int = port
        self.admin_url: str = server.tcp_url  # superuser, database "postgres", over TCP
        self.socket_url: str = server.socket_url  # superuser over the Unix socket (trust)
        self.password: str = server.password  # the superuser's
        self.data_dir: Path = server.data_dir
        self._names = itertools.count(1)

    def __repr__(self) -> str:
        return f"PgServer({self.host}:{self.port}, data_dir={str(self.data_dir)!r})"

    def url(
        self, database: str = "postgres", *, user: str = SUPERUSER, password: str | None = None
    ) -> str:
        """TCP URL for ``database``; the superuser's password is filled in for it."""
        return self.server.url_for(database, user=user, password=password, tcp=True)

    def execute(
        self, query: str | sql.Composable, params: Sequence[Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """Run one statement as the superuser (autocommit) in database ``postgres``."""
        with psycopg.connect(self.socket_url, autocommit=True) as conn:
            cur = conn.execute(query, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description is not None else []

    def unique_name(self, hint: str = "x") -> str:
        """A fresh identifier (lower case, at most 63 bytes) that starts with ``hint``."""
        clean = re.sub(r"[^a-z0-9_]+", "_", hint.lower()).strip("_")[:40] or "x"
        return f"{clean}_{next(self._names)}"

    def create_role(
        self,
        name: str | None = None,
        password: str | None = None,
        *,
        method: AuthMethod = "scram-sha-256",
        superuser: bool = False,
    ) -> PgRole:
        """Create (or reset) a login role whose password is stored for ``method``.

        The stored form decides the TCP handshake: SCRAM-SHA-256 or MD5.
        """
        name = name or self.unique_name("role")
        password = password or secrets.token_urlsafe(12)
        options = sql.SQL("LOGIN SUPERUSER" if superuser else "LOGIN NOSUPERUSER")
        with psycopg.connect(self.socket_url, autocommit=True) as conn:
            conn.execute("SET md5_password_warnings = off")
            conn.execute(sql.SQL("SET password_encryption = {}").format(sql.Literal(method)))
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone()
            verb = sql.SQL("ALTER ROLE" if exists else "CREATE ROLE")
            conn.execute(
                sql.SQL("{} {} {} PASSWORD {}").format(
                    verb, sql.Identifier(name), options, sql.Literal(password)
                )
            )
        return PgRole(name=name, password=password, method=method, server=self)

    def drop_role(self, name: str) -> None:
        self.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))

    def create_database(
        self, name: str | None = None, *, owner: str | None = None, template: str = "template0"
    ) -> str:
        """Create an empty database (a copy of ``template``); return its superuser URL.

        FILE_COPY copies the template's files instead of WAL-logging every page: faster
        here since the server runs without fsync (its checkpoints cost nothing).
        """
        name = name or self.unique_name("db")
        query = sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
            sql.Identifier(name), sql.Identifier(template)
        )
        if owner is not None:
            query = sql.SQL("{} OWNER {}").format(query, sql.Identifier(owner))
        self.execute(query)
        return self.url(name)

    def start_standby(self, data_dir: Path) -> EmbeddedPostgres:
        """A hot standby of this server in ``data_dir`` (made here; it must not exist):
        ``pg_basebackup -R`` over the Unix socket, then started on a free TCP port. It
        replays what the server writes and refuses writes (read-only transactions)."""
        from stripesync.db import embedded

        run_as = embedded._run_as()
        data_dir.mkdir(mode=0o700)
        if run_as.switch:
            os.chown(data_dir, run_as.uid, run_as.gid)
            embedded._make_traversable(data_dir)
        proc = subprocess.run(
            [
                str(embedded.pg_bin_dir() / "pg_basebackup"), "-D", str(data_dir / "pgdata"),
                "-R", "-X", "stream", "-c", "fast", "-h", str(self.server.socket_dir),
                "-p", str(self.port), "-U", SUPERUSER,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            user=run_as.uid if run_as.switch else None,
            group=run_as.gid if run_as.switch else None,
        )  # fmt: skip
        assert proc.returncode == 0, f"pg_basebackup failed: {proc.stderr}"
        shutil.copy(self.data_dir / "superuser-password", data_dir / "superuser-password")
        standby = EmbeddedPostgres(data_dir, port=0, fast=True)
        standby.start()
        return standby

    def drop_database(self, name: str) -> None:
        """Drop a database, ending any session still connected to it."""
        self.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


_PREFIX = "stripesync-test-"


def _private_dir(kind: str) -> Path:
    """A fresh directory under the system temp dir, not under pytest's basetemp.

    As root the server runs as another user, who must be able to traverse every parent:
    pytest makes ``/tmp/pytest-of-<user>`` private again (0700) whenever any pytest run
    starts, which would lock a running server's user out of its directory. The directory
    records which process owns it, so a later session can clean up after a killed one.
    """
    path = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{kind}-"))
    (path / "owner.pid").write_text(f"{os.getpid()}\n")
    return path


def _reap_orphans() -> None:
    """Stop servers and remove directories left by test sessions that were killed."""
    for path in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*"):
        try:
            owner = int((path / "owner.pid").read_text())
            os.kill(owner, 0)
            continue  # its session is still running
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            continue  # not ours to judge
        for data_dir in (path, path / "pg"):
            if (data_dir / "pgdata").is_dir():
                with contextlib.suppress(EmbeddedPostgresError):
                    EmbeddedPostgres(data_dir).stop()
        shutil.rmtree(path, ignore_errors=True)


def _stop_and_remove(server: EmbeddedPostgres, keep_log_in: Path | None = None) -> None:
    try:
        server.stop()
    finally:
        if keep_log_in is not None and server.log_path.exists():
            shutil.copyfile(server.log_path, keep_log_in / "server.log")
        shutil.rmtree(server.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    _reap_orphans()
    server = EmbeddedPostgres(_private_dir("server"), port=0, fast=True)
    log_dir = tmp_path_factory.mktemp("postgres")  # the log is kept here for a post-mortem
    try:
        server.start()
    except EmbeddedPostgresError as err:
        _stop_and_remove(server, log_dir)
        pytest.fail(f"embedded PostgreSQL did not start: {err}", pytrace=False)
    try:
        yield PgServer(server)
    finally:
        _stop_and_remove(server, log_dir)


@pytest.fixture
def pg_data_dir() -> Iterator[Path]:
    """A fresh directory for a test's own EmbeddedPostgres (``<dir>/pg`` is not made).

    Whatever server a test leaves running in ``<dir>/pg`` is stopped afterwards, and the
    directory removed.
    """
    parent = _private_dir("own")
    try:
        yield parent / "pg"
    finally:
        with contextlib.suppress(EmbeddedPostgresError):
            EmbeddedPostgres(parent / "pg").stop()
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def database_url(pg_server: PgServer, request: pytest.FixtureRequest) -> Iterator[str]:
    name = pg_server.unique_name(f"t_{request.node.name}")
    url = pg_server.create_database(name)
    try:
        yield url
    finally:
        pg_server.drop_database(name)
