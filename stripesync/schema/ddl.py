"""The database schema: one table per collection plus the sync's bookkeeping tables.

`migrate()` is idempotent and only ever adds: a newer SDK or API version brings new
columns (ALTER TABLE ... ADD COLUMN IF NOT EXISTS) and never drops or retypes one, so no
data is lost. Every table carries the guard (`schema/guard.py`): only the sync's own role
commits changes to it. Collections' tables have no foreign keys (Stripe's objects arrive in any
order) and indexes on reference columns and `created`.
"""

from __future__ import annotations

from collections.abc import Iterable

from stripesync.catalog import Collection, build_catalog, load_spec
from stripesync.schema.columns import SYSTEM_COLUMNS, Kind, columns_for, quote

SCHEMA_VERSION = 1

# Credentials stripesync keeps for itself (the secret of a webhook endpoint it
# registered): only the table's owner may read it. `migrate` revokes every other grant on
# it, including those `ALTER DEFAULT PRIVILEGES` gives tables as they are created, and the
# role setup (proxy/roles.py) keeps the application role out.
SECRETS_TABLE = "_secrets"
# Its rows for webhook endpoints stripesync registered: webhook_secret:<endpoint id>,
# value {"secret": "whsec_...", "url": ...}. Older versions kept them in `_meta`; the
# migration moves them.
WEBHOOK_SECRET_KEY = "webhook_secret"

# Bookkeeping tables; {s} is the quoted schema.
SYSTEM_TABLES = (
    """CREATE TABLE IF NOT EXISTS {s}."_meta" (
        key text PRIMARY KEY,
        value jsonb NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    )""",
    # One row per collection: its backfill state, and why it was skipped.
    """CREATE TABLE IF NOT EXISTS {s}."_collection_state" (
        collection text PRIMARY KEY,
        state text NOT NULL DEFAULT 'pending',
        skipped_reason text,
        objects bigint NOT NULL DEFAULT 0,
        pages bigint NOT NULL DEFAULT 0,
        started_at timestamptz,
        finished_at timestamptz,
        updated_at timestamptz NOT NULL DEFAULT now()
    )""",
    # Backfill progress: one row per (collection, time slice, parent); committed in the
    # same transaction as the rows of the page it follows.
    """CREATE TABLE IF NOT EXISTS {s}."_backfill_cursor" (
        collection text NOT NULL,
        slice text NOT NULL,
        parent_id text NOT NULL DEFAULT '',
        starting_after text,
        done boolean NOT NULL DEFAULT false,
        pages bigint NOT NULL DEFAULT 0,
        objects bigint NOT NULL DEFAULT 0,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (collection, slice, parent_id)
    )""",
    # The live sync's position in the events stream.
    """CREATE TABLE IF NOT EXISTS {s}."_events_cursor" (
        name text PRIMARY KEY,
        event_id text,
        event_created bigint,
        recorded_at timestamptz NOT NULL DEFAULT now()
    )""",
    # Tombstones: what was deleted at Stripe, when, and by which event.
    """CREATE TABLE IF NOT EXISTS {s}."_deletions" (
        collection text NOT NULL,
        id text NOT NULL,
        deleted_at timestamptz NOT NULL,
        event_id text,
        PRIMARY KEY (collection, id)
    )""",
    # The scheduled re-list (sync/relist.py): when each collection's last re-list started
    # and what it found, so a restart keeps the schedule instead of re-listing everything.
    """CREATE TABLE IF NOT EXISTS {s}."_relist_state" (
        collection text PRIMARY KEY,
        relisted_at timestamptz NOT NULL,
        listed bigint NOT NULL DEFAULT 0,
        repaired bigint NOT NULL DEFAULT 0,
        removed bigint NOT NULL DEFAULT 0,
        skipped_reason text,
        updated_at timestamptz NOT NULL DEFAULT now()
    )""",
    # Credentials: `key` says whose ("webhook_secret:we_..."); see SECRETS_TABLE.
    """CREATE TABLE IF NOT EXISTS {s}."_secrets" (
        key text PRIMARY KEY,
        value jsonb NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    )""",
)


def schema_statements(schema: str, collections: Iterable[Collection] | None = None) -> list[str]:
    """Every statement `migrate` runs, in order; each is idempotent."""
    s = quote(schema)
    out = [f"CREATE SCHEMA IF NOT EXISTS {s}"]
    out += [t.format(s=s) for t in SYSTEM_TABLES]
    for c in collections if collections is not None else build_catalog():
        out += table_statements(schema, c)
    return out


def table_statements(schema: str, collection: Collection) -> list[str]:
    s = quote(schema)
    t = f"{s}.{quote(collection.table)}"
    cols = columns_for(collection.name)
    defs = []
    for col in cols:
        null = " NOT NULL" if col.name == collection.key else ""
        defs.append(f"{quote(col.name)} {col.pg_type}{null}")
    defs += [f"{quote(n)} {ddl}" for n, ddl in SYSTEM_COLUMNS]
    defs.append(f"PRIMARY KEY ({quote(collection.key)})")
    out = [f"CREATE TABLE IF NOT EXISTS {t} (\n    " + ",\n    ".join(defs) + "\n)"]
    # Columns a newer SDK adds appear on existing tables too.
    for col in cols:
        out.append(f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {quote(col.name)} {col.pg_type}")
    for n, ddl in SYSTEM_COLUMNS:
        if "NOT NULL" in ddl and "DEFAULT" not in ddl:
            continue  # present since the table's creation
        out.append(f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {quote(n)} {ddl}")
    for col in cols:
        if col.kind is Kind.REF or col.name == "created":
            idx = quote(f"{collection.table}_{col.name}_idx"[:63])
            out.append(f"CREATE INDEX IF NOT EXISTS {idx} ON {t} ({quote(col.name)})")
    if collection.read.parent:
        idx = quote(f"{collection.table}__parent_id_idx"[:63])
        out.append(f"CREATE INDEX IF NOT EXISTS {idx} ON {t} (_parent_id)")
    return out


def meta_values() -> dict[str, object]:
    spec = load_spec()
    return {
        "schema_version": SCHEMA_VERSION,
        "sdk_version": spec.sdk_version,
        "api_version": spec.api_version,
    }
