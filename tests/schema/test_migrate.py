import psycopg

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
