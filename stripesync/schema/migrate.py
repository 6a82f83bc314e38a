"""Apply the schema to a database: idempotent, additive, safe to run at every start."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

import psycopg

from stripesync.catalog import Collection, build_catalog
from stripesync.schema.columns import columns_for, masked_raw, quote
from stripesync.schema.ddl import SYSTEM_TABLES, meta_values, table_statements

# One migration at a time per database, whatever the number of processes.
LOCK_KEY = 0x5157_5359_4E43  # "SWSYNC"

_ADD_COLUMN = re.compile(r'ADD COLUMN IF NOT EXISTS "((?:[^"]|"")+)"')
_CREATE_INDEX = re.compile(r'CREATE INDEX IF NOT EXISTS "((?:[^"]|"")+)"')


async def migrate(
    conn: psycopg.AsyncConnection,  # type: ignore[type-arg]
    schema: str = "stripe",
    collections: Iterable[Collection] | None = None,
) -> list[str]:
    """Bring `schema` up to date; returns the statements it had to run."""
    wanted = list(collections) if collections is not None else list(build_catalog())
    ran: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        # CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema
        # is there: a role given only the schema may still migrate
        cur = await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        if await cur.fetchone() is None:
            await conn.execute(f"CREATE SCHEMA {quote(schema)}")
        for t in SYSTEM_TABLES:
            await conn.execute(t.format(s=quote(schema)))
        cur = await conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = %s",
            (schema,),
        )
        existing: dict[str, set[str]] = {}
        for table, column in await cur.fetchall():
            existing.setdefault(table, set()).add(column)
        cur = await conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,)
        )
        indexes = {r[0] for r in await cur.fetchall()}
        for c in wanted:
            statements = table_statements(schema, c)
            have = existing.get(c.table)
            for stmt in statements:
                if stmt.startswith("CREATE TABLE"):
                    if have is not None:
                        continue
                elif m := _ADD_COLUMN.search(stmt):
                    if have is None or m.group(1).replace('""', '"') in have:
                        continue
                elif (m := _CREATE_INDEX.search(stmt)) and m.group(1) in indexes:
                    continue
                await conn.execute(stmt)  # type: ignore[arg-type]
                ran.append(stmt)
        for c in wanted:
            if c.masked and c.table in existing:
                await _scrub(conn, schema, c)
        for key, value in meta_values().items():
            await conn.execute(
                f"INSERT INTO {quote(schema)}._meta (key, value) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = now()",
                (key, json.dumps(value)),
            )
        for c in wanted:
            await conn.execute(
                f"INSERT INTO {quote(schema)}._collection_state (collection) VALUES (%s) "
                "ON CONFLICT DO NOTHING",
                (c.name,),
            )
    return ran


async def _scrub(conn: psycopg.AsyncConnection, schema: str, c: Collection) -> None:  # type: ignore[type-arg]
    """Credentials stored before the catalog masked them are emptied, as the store now
    stores them (`masked_raw`)."""
    t = f"{quote(schema)}.{quote(c.table)}"
    cols = [quote(col.name) for col in columns_for(c.name) if col.field in c.masked]
    masked = masked_raw("_raw", c.masked)
    sets = [f"_raw = {masked}", *(f"{n} = NULL" for n in cols)]
    held = [f"{masked} <> _raw", *(f"{n} IS NOT NULL" for n in cols)]
    await conn.execute(  # type: ignore[arg-type]
        f"UPDATE {t} SET {', '.join(sets)} WHERE {' OR '.join(held)}"
    )
