"""Apply the schema to a database: idempotent, additive, safe to run at every start."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable

import psycopg

from stripesync.catalog import Collection, build_catalog
from stripesync.schema.columns import SYSTEM_COLUMNS, columns_for, masked_raw, quote
from stripesync.schema.ddl import (
    SECRETS_TABLE,
    SYSTEM_TABLES,
    WEBHOOK_SECRET_KEY,
    meta_values,
    table_statements,
)
from stripesync.schema.guard import (
    GUARD_FUNCTION,
    GUARD_TRIGGER,
    PENDING_KEY,
    guard_function_sql,
    guard_trigger_sql,
    pending_key_function_sql,
    pending_key_trigger_sql,
)

log = logging.getLogger("stripesync.migrate")

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
        await _move_secrets(conn, schema)
        await _lock_secrets(conn, schema)
        cur = await conn.execute(
            "SELECT table_name, column_name, column_default IS NOT NULL "
            "FROM information_schema.columns WHERE table_schema = %s",
            (schema,),
        )
        existing: dict[str, set[str]] = {}
        defaulted: set[tuple[str, str]] = set()
        for table, column, has_default in await cur.fetchall():
            existing.setdefault(table, set()).add(column)
            if has_default:
                defaulted.add((table, column))
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
            if have is not None:  # a table made before its NOT NULL columns had defaults
                ran += await _defaults(conn, schema, c, have, defaulted)
        ran += await _guard(conn, schema, wanted)
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


# The NOT NULL columns the proxy's rolled-back trial of an INSERT may leave out
# (schema/guard.py): their default, where a table made earlier lacks it.
_SYSTEM_DEFAULTS = {
    name: ddl.split(" DEFAULT ", 1)[1]
    for name, ddl in SYSTEM_COLUMNS
    if "NOT NULL" in ddl and " DEFAULT " in ddl
}


async def _defaults(
    conn: psycopg.AsyncConnection,  # type: ignore[type-arg]
    schema: str,
    collection: Collection,
    columns: set[str],
    defaulted: set[tuple[str, str]],
) -> list[str]:
    ran: list[str] = []
    table = f"{quote(schema)}.{quote(collection.table)}"
    for column, default in _SYSTEM_DEFAULTS.items():
        if column in columns and (collection.table, column) not in defaulted:
            stmt = f"ALTER TABLE {table} ALTER COLUMN {quote(column)} SET DEFAULT {default}"
            await conn.execute(stmt)  # type: ignore[arg-type]
            ran.append(stmt)
    return ran


async def _function(
    conn: psycopg.AsyncConnection,  # type: ignore[type-arg]
    schema: str,
    name: str,
    sql: str,
) -> list[str]:
    """``CREATE OR REPLACE FUNCTION`` ``sql`` unless the function has that body already."""
    tag = "$" + sql.split("$")[1] + "$"
    body = sql.split(tag)[1]  # between the $tag$ quotes
    cur = await conn.execute(
        "SELECT p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = %s AND p.proname = %s",
        (schema, name),
    )
    if [r[0] for r in await cur.fetchall()] == [body]:
        return []
    await conn.execute(sql)  # type: ignore[arg-type]
    return [sql]


async def _guard(
    conn: psycopg.AsyncConnection,  # type: ignore[type-arg]
    schema: str,
    collections: list[Collection],
) -> list[str]:
    """The guard on every table of the schema, and the pending key on every collection's
    (schema/guard.py), where a table lacks them."""
    ran = await _function(conn, schema, GUARD_FUNCTION, guard_function_sql(schema))
    ran += await _function(conn, schema, PENDING_KEY, pending_key_function_sql(schema))
    cur = await conn.execute(
        "SELECT c.relname, array_agg(t.tgname) FILTER (WHERE t.tgname IS NOT NULL) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_trigger t ON t.tgrelid = c.oid AND t.tgname IN (%s, %s) "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') GROUP BY c.relname",
        (GUARD_TRIGGER, PENDING_KEY, schema),
    )
    triggers = {str(r[0]): set(r[1] or ()) for r in await cur.fetchall()}
    wanted: list[str] = []
    for table, present in sorted(triggers.items()):
        if GUARD_TRIGGER not in present:
            wanted.append(guard_trigger_sql(schema, table))
    for c in collections:
        if c.table in triggers and PENDING_KEY not in triggers[c.table]:
            wanted.append(pending_key_trigger_sql(schema, c.table, c.key))
    for stmt in wanted:
        await conn.execute(stmt)  # type: ignore[arg-type]
    return ran + wanted
async def _move_secrets(conn: psycopg.AsyncConnection, schema: str) -> None:  # type: ignore[type-arg]
    """Webhook secrets that older versions kept in `_meta` (which applications may
    read) move to the secrets table; the newer copy of a key wins."""
    s = quote(schema)
    await conn.execute(
        f"WITH moved AS (DELETE FROM {s}._meta WHERE starts_with(key, %s) "  # type: ignore[arg-type]
        "RETURNING key, value, updated_at) "
        f"INSERT INTO {s}.{quote(SECRETS_TABLE)} (key, value, updated_at) "
        "SELECT key, value, updated_at FROM moved "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at "
        f"WHERE {s}.{quote(SECRETS_TABLE)}.updated_at < excluded.updated_at",
        (WEBHOOK_SECRET_KEY + ":",),
    )


async def _lock_secrets(conn: psycopg.AsyncConnection, schema: str) -> None:  # type: ignore[type-arg]
    """Only the secrets table's owner may use it: revoke every other grant on it, from
    PUBLIC and from each role, on the table and its columns. Tables get grants as they
    are created (`ALTER DEFAULT PRIVILEGES ... GRANT SELECT ON TABLES`, which the role
    setup gives the application role), and anyone may have granted more since."""
    table = f"{quote(schema)}.{quote(SECRETS_TABLE)}"
    cur = await conn.execute(
        "SELECT pg_has_role(current_user, c.relowner, 'USAGE'), "
        "array(SELECT DISTINCT CASE a.grantee WHEN 0 THEN 'PUBLIC' "
        "ELSE quote_ident(pg_get_userbyid(a.grantee)) END "
        "FROM (SELECT (aclexplode(c.relacl)).grantee "
        "UNION ALL SELECT (aclexplode(t.attacl)).grantee "
        "FROM pg_attribute t WHERE t.attrelid = c.oid AND t.attacl IS NOT NULL) a "
        "WHERE a.grantee <> c.relowner ORDER BY 1) "
        "FROM pg_class c WHERE c.oid = to_regclass(%s)",
        (table,),
    )
    row = await cur.fetchone()
    if row is None or not row[1]:
        return
    may, grantees = row
    if not may:
        # only the owner (or a member, or a superuser) can take its grants back
        log.warning(
            "%s is readable by role(s) other than its owner (%s) and this role cannot "
            "revoke that: run stripesync as the owner of the schema's tables",
            table,
            ", ".join(grantees),
        )
        return
    for grantee in grantees:
        await conn.execute(f"REVOKE ALL ON TABLE {table} FROM {grantee} CASCADE")  # type: ignore[arg-type]


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
