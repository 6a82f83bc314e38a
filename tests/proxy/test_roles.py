"""The role setup (`stripesync roles`) with real roles: the application role reads the
synced tables, but no credential stripesync keeps and no webhook endpoint's secret."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from stripesync.catalog import build_catalog
from stripesync.proxy.roles import role_setup_sql
from stripesync.proxy.writes import StripeWriteHandler
from stripesync.schema.migrate import migrate
from stripesync.sync.backfill import Backfill
from tests.plugins.postgres import PgRole, PgServer
from tests.proxy.conftest import RunningProxy
from tests.proxy.writes_fixtures import WriteRig


@pytest.fixture
def roles(pg_server: PgServer, database_url: str) -> Iterator[tuple[PgRole, PgRole]]:
    """An owner role and an application role; what they own or were granted in
    `database_url` goes with them."""
    owner, app = pg_server.create_role(), pg_server.create_role()
    yield owner, app
    with psycopg.connect(database_url, autocommit=True) as admin:
        for role in (app, owner):
            admin.execute(f'DROP OWNED BY "{role.name}" CASCADE')  # type: ignore[arg-type]
    for role in (app, owner):
        pg_server.drop_role(role.name)


def _apply(url: str, owner: PgRole, app: PgRole) -> None:
    with psycopg.connect(url, autocommit=True) as admin:
        for statement in role_setup_sql("stripe", owner.name, app.name):
            admin.execute(statement)  # type: ignore[arg-type]


def _denied(conn: psycopg.Connection[Any], sql: str) -> str | None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
        conn.execute(sql)  # type: ignore[arg-type]
    return e.value.sqlstate


async def _migrate(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate(conn, "stripe", build_catalog().select(["customer", "webhook_endpoint"]))


def test_roles_set_up_before_the_first_migration_keep_the_secrets_table_out(
    database_url: str, roles: tuple[PgRole, PgRole]
) -> None:
    """The owner's default privileges give the application SELECT on every table the
    owner creates later: the migration takes it back on the secrets table."""
    import asyncio

    owner, app = roles
    dbname = conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA stripe AUTHORIZATION "{owner.name}"')  # type: ignore[arg-type]
    _apply(database_url, owner, app)  # an empty schema: no secrets table yet
    asyncio.run(_migrate(owner.url(dbname)))
    with psycopg.connect(owner.url(dbname), autocommit=True) as conn:
        conn.execute("INSERT INTO stripe._secrets (key, value) VALUES ('k', '{\"v\": 1}')")
    with psycopg.connect(app.url(dbname), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM stripe.customer").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM stripe.webhook_endpoint").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM stripe._meta").fetchone() is not None
        assert _denied(conn, "SELECT * FROM stripe._secrets") == "42501"
        assert _denied(conn, "SELECT count(*) FROM stripe._secrets") == "42501"
        assert _denied(conn, "DELETE FROM stripe._secrets") == "42501"
    _apply(database_url, owner, app)  # applied again, after the migration: still out
    with psycopg.connect(app.url(dbname), autocommit=True) as conn:
        assert _denied(conn, "SELECT key FROM stripe._secrets") == "42501"
        assert conn.execute("SELECT count(*) FROM stripe.customer").fetchone() == (0,)


def test_the_application_reads_webhook_endpoints_but_never_their_secret(
    writes: WriteRig,
    pg_server: PgServer,
    start_proxy: Callable[..., RunningProxy],
) -> None:
    """An endpoint created through the proxy by the application role, and one created at
    Stripe and backfilled: Stripe has their secrets, the table does not."""
    owner, app = pg_server.create_role(), pg_server.create_role()
    dbname = conninfo_to_dict(writes.database_url)["dbname"]
    try:
        _apply(writes.database_url, owner, app)
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(owner.url(dbname), open=False)
        proxy = start_proxy(writes.database_url, write_handler=StripeWriteHandler(writes.api, pool))
        proxy.call(pool.open(wait=True))
        try:
            with psycopg.connect(proxy.url(app.url(dbname)), autocommit=True) as conn:
                row = conn.execute(
                    "INSERT INTO stripe.webhook_endpoint (url, enabled_events) "
                    "VALUES ('https://example.com/a', '[\"customer.created\"]') "
                    "RETURNING id, secret, _raw -> 'secret'"
                ).fetchone()
            assert row is not None and row[1] is None and row[2] is None
            made = writes.stripe.v1.webhook_endpoints.create(
                params={"url": "https://example.com/b", "enabled_events": ["*"]}
            )
            assert made.secret.startswith("whsec_")
            # the emulator returns the secret on lists too: the backfill is tried hard
            listed = {e.id: e.to_dict() for e in writes.stripe.v1.webhook_endpoints.list().data}
            assert set(listed) == {row[0], made.id}
            assert all(str(e["secret"]).startswith("whsec_") for e in listed.values())
            result = proxy.call(
                Backfill(writes.api, pool, collections=["webhook_endpoint"]).run()
            )
            assert result.objects == 2
        finally:
            proxy.call(pool.close())
        with psycopg.connect(app.url(dbname), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT id, secret, _raw ? 'secret', _raw -> 'secret', t::text "
                "FROM stripe.webhook_endpoint t ORDER BY id"
            ).fetchall()
            assert _denied(conn, "SELECT * FROM stripe._secrets") == "42501"
        assert sorted(r[0] for r in rows) == sorted([row[0], made.id])
        for _id, secret, has_key, raw_secret, text in rows:
            assert secret is None and raw_secret is None and "whsec_" not in text
            assert has_key  # the field is there, emptied: what was masked stays visible
    finally:
        with writes.direct() as conn:
            for role in (app.name, owner.name):
                conn.execute(f'DROP OWNED BY "{role}"')  # type: ignore[arg-type]
        pg_server.drop_role(owner.name)
        pg_server.drop_role(app.name)
