"""The guard: only the sync's own role changes the schema's tables for good.

Every table of the schema carries a deferred constraint trigger, ``_stripesync_guard``.
When a role without the TRUNCATE privilege on the table inserts, updates or deletes a
row, the trigger queues a check that runs at COMMIT and fails the transaction with
``42501``: nothing such a role writes is ever committed. A role that may TRUNCATE the
table (its owner, a superuser, the sync's role as ``stripesync roles`` grants it) could
empty it at will, which no trigger sees: it is trusted with the table's contents, and
its writes (the sync's, the proxy's store) pass without the check being queued (the
trigger's WHEN). The role setup never grants TRUNCATE to application roles.

This is what lets the proxy ask PostgreSQL itself whether a client may make a write:
the client's role is granted INSERT, UPDATE and DELETE like any PostgreSQL role, and the
proxy runs the client's statement on the client's own session, inside a savepoint (or a
transaction) it rolls back at once (``proxy/writes.py``). PostgreSQL applies the role's
privileges, its row-level security (USING and WITH CHECK), the transaction's read-only
mode, a hot standby's refusal, triggers and constraints, exactly as for a direct write;
the rolled-back savepoint discards the queued check. A write PostgreSQL refuses never
reaches Stripe. The same statement sent straight to PostgreSQL is refused at COMMIT.

A trial INSERT that leaves the key out (or gives NULL: Stripe assigns it) must not fail
on ``NOT NULL``: a BEFORE INSERT trigger, ``_stripesync_pending_key``, fills a NULL key
with a placeholder (:data:`PENDING_KEY_PREFIX` and a random UUID) that no stored row ever
has (the store always gives the key; its rows skip the trigger by its WHEN), and
``_raw`` and ``_stripe_time`` have defaults for the same reason.
"""

from __future__ import annotations

from stripesync.schema.columns import quote

__all__ = [
    "GUARD_FUNCTION",
    "GUARD_TRIGGER",
    "PENDING_KEY",
    "PENDING_KEY_PREFIX",
    "guard_function_sql",
    "guard_trigger_sql",
    "pending_key_function_sql",
    "pending_key_trigger_sql",
]

GUARD_FUNCTION = "_stripesync_guard"
GUARD_TRIGGER = "_stripesync_guard"
PENDING_KEY = "_stripesync_pending_key"  # the function and the trigger
PENDING_KEY_PREFIX = "stripesync:pending:"


def pending_key_function_sql(schema: str) -> str:
    """The BEFORE INSERT function filling a NULL key (its column: the trigger's argument)."""
    return f"""CREATE OR REPLACE FUNCTION {quote(schema)}.{quote(PENDING_KEY)}()
RETURNS trigger LANGUAGE plpgsql AS $pending$
BEGIN
  NEW := pg_catalog.jsonb_populate_record(NEW, pg_catalog.jsonb_build_object(TG_ARGV[0],
    '{PENDING_KEY_PREFIX}' || pg_catalog.gen_random_uuid()));
  RETURN NEW;
END
$pending$"""


def pending_key_trigger_sql(schema: str, table: str, key: str) -> str:
    return (
        f"CREATE TRIGGER {quote(PENDING_KEY)} BEFORE INSERT ON {quote(schema)}.{quote(table)} "
        f"FOR EACH ROW WHEN (NEW.{quote(key)} IS NULL) "
        f"EXECUTE FUNCTION {quote(schema)}.{quote(PENDING_KEY)}('{key}')"
    )


def guard_function_sql(schema: str) -> str:
    """The trigger function (SECURITY INVOKER: it checks the role that commits)."""
    return f"""CREATE OR REPLACE FUNCTION {quote(schema)}.{quote(GUARD_FUNCTION)}()
RETURNS trigger LANGUAGE plpgsql AS $guard$
BEGIN
  IF pg_catalog.has_table_privilege(current_user, TG_RELID, 'TRUNCATE') THEN
    RETURN NULL;
  END IF;
  RAISE EXCEPTION USING
    ERRCODE = '42501',
    MESSAGE = pg_catalog.format(
      'permission denied: %I.%I is changed only through the stripesync proxy',
      TG_TABLE_SCHEMA, TG_TABLE_NAME),
    DETAIL = 'The proxy makes the change at Stripe first, then stores what Stripe returned.',
    HINT = 'Connect through the stripesync proxy to write this table.';
END
$guard$"""


def guard_trigger_sql(schema: str, table: str) -> str:
    """The deferred check on ``table``, skipped for roles that may TRUNCATE it."""
    name = f"{quote(schema)}.{quote(table)}"
    regclass = "'" + name.replace("'", "''") + "'::regclass"
    return (
        f"CREATE CONSTRAINT TRIGGER {quote(GUARD_TRIGGER)} "
        f"AFTER INSERT OR UPDATE OR DELETE ON {name} "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
        f"WHEN (pg_catalog.has_table_privilege(current_user, {regclass}, 'TRUNCATE') "
        "IS NOT TRUE) "
        f"EXECUTE FUNCTION {quote(schema)}.{quote(GUARD_FUNCTION)}()"
    )
