import psycopg
import pytest

from stripesync.catalog import build_catalog
from stripesync.schema.migrate import migrate


async def _columns(conn, schema, table):
    cur = await conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s",
        (schema, table),
    )
    return dict(await cur.fetchall())


async def test_migrate_creates_every_table_with_typed_columns(database_url):
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        ran = await migrate(conn, "stripe")
        assert ran
        cur = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'stripe'"
        )
        tables = {r[0] for r in await cur.fetchall()}
        for c in build_catalog():
            assert c.table in tables, c.table
        cols = await _columns(conn, "stripe", "customer")
        assert cols["id"] == "text"
        assert cols["created"] == "timestamp with time zone"
        assert cols["balance"] == "bigint"
        assert cols["metadata"] == "jsonb"
        assert cols["livemode"] == "boolean"
        assert cols["_raw"] == "jsonb"
        cur = await conn.execute(
            "SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname = 'stripe' AND t.typtype = 'e'"
        )
        assert (await cur.fetchone())[0] == 0  # no enum types
        cur = await conn.execute(
            "SELECT count(*) FROM information_schema.table_constraints "
            "WHERE table_schema = 'stripe' AND constraint_type = 'FOREIGN KEY'"
        )
        assert (await cur.fetchone())[0] == 0
        cur = await conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'stripe' AND tablename = 'charge'"
        )
        idx = {r[0] for r in await cur.fetchall()}
        assert "charge_customer_id_idx" in idx and "charge_created_idx" in idx


async def test_migrate_is_idempotent_and_only_adds(database_url):
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await migrate(conn, "other_schema")
        await conn.execute(
            "INSERT INTO other_schema.customer (id, _raw, _stripe_time) "
            "VALUES ('cus_1', '{}', now())"
        )
        # an older version of the tool had fewer columns: the next start adds them back
        await conn.execute("ALTER TABLE other_schema.customer DROP COLUMN email")
        await conn.commit()
        ran = await migrate(conn, "other_schema")
        assert ran == [
            'ALTER TABLE "other_schema"."customer" ADD COLUMN IF NOT EXISTS "email" text'
        ]
        assert await migrate(conn, "other_schema") == []
        cur = await conn.execute("SELECT id FROM other_schema.customer")
        assert await cur.fetchall() == [("cus_1",)]


async def test_bookkeeping_tables_added_later_appear_on_existing_schemas(database_url):
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await migrate(conn, "stripe", [])
        cols = await _columns(conn, "stripe", "_relist_state")
        assert cols["relisted_at"] == "timestamp with time zone"
        assert cols["skipped_reason"] == "text"
        await conn.execute(
            "INSERT INTO stripe._relist_state (collection, relisted_at) VALUES ('account', now())"
        )
        await conn.commit()
        await migrate(conn, "stripe", [])  # kept as it is
        cur = await conn.execute("SELECT collection FROM stripe._relist_state")
        assert await cur.fetchall() == [("account",)]
        # a schema made before the table existed gets it at the next start
        await conn.execute("DROP TABLE stripe._relist_state")
        await conn.commit()
        await migrate(conn, "stripe", [])
        assert await _columns(conn, "stripe", "_relist_state")


async def test_a_role_owning_only_the_schema_can_migrate(pg_server, database_url):
    """No CREATE on the database is needed once the schema exists."""
    import psycopg

    from stripesync.catalog import build_catalog
    from stripesync.schema.migrate import migrate

    dbname = database_url.rsplit("/", 1)[1]
    role = pg_server.create_role()
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as admin:
        await admin.execute(f'CREATE SCHEMA stripe AUTHORIZATION "{role.name}"')
        await admin.execute(f"REVOKE CREATE ON DATABASE {dbname} FROM PUBLIC")
    url = role.url(dbname)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate(conn, "stripe", build_catalog().select(["customer"]))
        cur = await conn.execute("SELECT count(*) FROM stripe.customer")
        assert await cur.fetchone() == (0,)


def _drop_roles(database_url, pg_server, *roles):
    with psycopg.connect(database_url, autocommit=True) as admin:
        for role in roles:
            admin.execute(f'DROP OWNED BY "{role.name}" CASCADE')
    for role in roles:
        pg_server.drop_role(role.name)


def _grantees(database_url):
    """Every role holding a grant on stripe._secrets (table or column), owner aside."""
    with psycopg.connect(database_url, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT DISTINCT a.grantee::regrole::text FROM pg_class c, "
            "LATERAL (SELECT (aclexplode(c.relacl)).grantee UNION ALL "
            "SELECT (aclexplode(t.attacl)).grantee FROM pg_attribute t "
            "WHERE t.attrelid = c.oid AND t.attacl IS NOT NULL) a "
            "WHERE c.oid = 'stripe._secrets'::regclass AND a.grantee <> c.relowner"
        ).fetchall()
    return sorted(r[0] for r in rows)


async def test_an_older_schemas_webhook_secrets_move_out_of_the_applications_reach(
    pg_server, database_url
):
    """A schema an older version made kept webhook secrets in `_meta`, which the role
    setup lets the application read. The migration moves them to `_secrets` and takes
    back the SELECT that the default privileges give the new table."""
    from stripesync.proxy.roles import role_setup_sql

    dbname = database_url.rsplit("/", 1)[1]
    owner, app = pg_server.create_role(), pg_server.create_role()
    try:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f'CREATE SCHEMA stripe AUTHORIZATION "{owner.name}"')
        async with await psycopg.AsyncConnection.connect(owner.url(dbname),
                                                         autocommit=True) as conn:
            await migrate(conn, "stripe", [])
            # as an older version left it: no _secrets, the secret in _meta
            await conn.execute("DROP TABLE stripe._secrets")
            await conn.execute(
                "INSERT INTO stripe._meta (key, value, updated_at) VALUES "
                "('webhook_secret:we_old', '{\"secret\": \"whsec_old0000\", "
                "\"url\": \"https://example.com/h\"}', '2024-05-01T00:00:00Z')"
            )
        with psycopg.connect(database_url, autocommit=True) as admin:
            for statement in role_setup_sql("stripe", owner.name, app.name):
                admin.execute(statement)
        with psycopg.connect(app.url(dbname), autocommit=True) as conn:
            assert conn.execute(  # what this migration is for
                "SELECT value ->> 'secret' FROM stripe._meta WHERE key = 'webhook_secret:we_old'"
            ).fetchall() == [("whsec_old0000",)]

        async with await psycopg.AsyncConnection.connect(owner.url(dbname),
                                                         autocommit=True) as conn:
            ran = await migrate(conn, "stripe", [])  # bookkeeping only: the new table's guard
            assert [st.split(" ON ")[1].split(" ")[0] for st in ran] == ['"stripe"."_secrets"']
            cur = await conn.execute(
                "SELECT key, value, updated_at = '2024-05-01T00:00:00Z' FROM stripe._secrets"
            )
            assert await cur.fetchall() == [
                ("webhook_secret:we_old",
                 {"secret": "whsec_old0000", "url": "https://example.com/h"}, True)
            ]
            await migrate(conn, "stripe", [])  # again: nothing moves twice, nothing is lost
            cur = await conn.execute("SELECT count(*) FROM stripe._secrets")
            assert await cur.fetchone() == (1,)
        assert _grantees(database_url) == []
        with psycopg.connect(app.url(dbname), autocommit=True) as conn:
            assert conn.execute(
                "SELECT count(*) FROM stripe._meta WHERE key LIKE 'webhook%'"
            ).fetchone() == (0,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as denied:
                conn.execute("SELECT * FROM stripe._secrets")
            assert denied.value.sqlstate == "42501"
    finally:
        _drop_roles(database_url, pg_server, app, owner)


async def test_the_migration_takes_back_every_grant_on_the_secrets_table(
    pg_server, database_url
):
    dbname = database_url.rsplit("/", 1)[1]
    app, other = pg_server.create_role(), pg_server.create_role()
    try:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await migrate(conn, "stripe", [])
            await conn.execute("INSERT INTO stripe._secrets (key, value) VALUES ('k', '{}')")
            await conn.execute("GRANT USAGE ON SCHEMA stripe TO PUBLIC")
            await conn.execute("GRANT SELECT ON stripe._secrets TO PUBLIC")
            await conn.execute(f'GRANT ALL ON stripe._secrets TO "{app.name}" WITH GRANT OPTION')
            await conn.execute(f'GRANT SELECT (value) ON stripe._secrets TO "{other.name}"')
        with psycopg.connect(app.url(dbname), autocommit=True) as conn:
            conn.execute(f'GRANT SELECT ON stripe._secrets TO "{other.name}"')  # passed on
        assert _grantees(database_url) == sorted(["-", app.name, other.name])  # "-": PUBLIC
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await migrate(conn, "stripe", [])
        assert _grantees(database_url) == []
        for role in (app, other):
            with (
                psycopg.connect(role.url(dbname), autocommit=True) as conn,
                pytest.raises(psycopg.errors.InsufficientPrivilege),
            ):
                conn.execute("SELECT value FROM stripe._secrets")
        with psycopg.connect(database_url, autocommit=True) as owner:  # the owner still may
            assert owner.execute("SELECT key FROM stripe._secrets").fetchall() == [("k",)]
    finally:
        _drop_roles(database_url, pg_server, app, other)


async def test_credentials_stored_before_they_were_masked_are_emptied(database_url):
    endpoint = build_catalog()["webhook_endpoint"]
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await migrate(conn, "stripe", [endpoint])
        # as an older version stored an endpoint created through the proxy
        await conn.execute(
            "INSERT INTO stripe.webhook_endpoint (id, secret, url, _raw, _stripe_time) VALUES "
            "('we_1', 'whsec_kept0000', 'https://example.com/h', '{\"id\": \"we_1\", "
            "\"secret\": \"whsec_kept0000\", \"url\": \"https://example.com/h\"}', now()), "
            "('we_2', NULL, 'https://example.com/i', "
            "'{\"id\": \"we_2\", \"url\": \"https://example.com/i\"}', now())"
        )
        assert await migrate(conn, "stripe", [endpoint]) == []
        cur = await conn.execute(
            "SELECT id, secret, url, _raw FROM stripe.webhook_endpoint ORDER BY id"
        )
        assert await cur.fetchall() == [
            ("we_1", None, "https://example.com/h",
             {"id": "we_1", "secret": None, "url": "https://example.com/h"}),
            ("we_2", None, "https://example.com/i",
             {"id": "we_2", "url": "https://example.com/i"}),
        ]
