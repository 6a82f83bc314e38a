"""Credentials stripesync keeps for itself, in the schema's secrets table.

Only that table's owner may read it (`stripesync.schema.migrate` revokes every other
grant, the role setup keeps the application role out): the webhook secret of an endpoint
stripesync registered lives here, never in a table applications read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from stripesync.schema.columns import quote
from stripesync.schema.ddl import SECRETS_TABLE

Conn = psycopg.AsyncConnection  # type: ignore[type-arg]


async def keep_secret(conn: Conn, schema: str, key: str, value: Mapping[str, Any]) -> None:
    """Store (or replace) the credential `key`."""
    await conn.execute(
        f"INSERT INTO {quote(schema)}.{quote(SECRETS_TABLE)} (key, value) "  # type: ignore[arg-type]
        "VALUES (%s, %s) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = now()",
        (key, Jsonb(dict(value))),
    )


async def read_secrets(conn: Conn, schema: str, prefix: str) -> dict[str, dict[str, Any]]:
    """The credentials whose key starts with `prefix`, by key."""
    cur = await conn.execute(
        f"SELECT key, value FROM {quote(schema)}.{quote(SECRETS_TABLE)} "  # type: ignore[arg-type]
        "WHERE starts_with(key, %s) ORDER BY key",
        (prefix,),
    )
    return {str(k): dict(v) for k, v in await cur.fetchall()}
