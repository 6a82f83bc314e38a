"""The role setup: applications read the synced tables directly, change them only through
the proxy.

Two roles:

- the **owner** role: the sync (backfill, live sync) and the proxy's store connections
  log in with it. It owns nothing new here but gets every right on the schema's tables
  (and may create temporary tables, which the store stages batches in);
- the **application** role: clients log in with it, directly or through the proxy. It
  reads every table of the schema but `_secrets` (the credentials stripesync keeps) and
  is granted INSERT, UPDATE and DELETE on them
  (SELECT only with ``writes=False``). The proxy asks PostgreSQL, on the client's own
  session, whether the role may make a write before anything goes to Stripe, so these
  grants (and any narrower ones, row-level security, ...) are what decides. Sent
  straight to PostgreSQL, the same write is refused at COMMIT by the schema's guard
  (:mod:`stripesync.schema.guard`); TRUNCATE is never granted.

The application role must not own the tables, be a superuser or inherit from the owner
(each of those bypasses the grants and the guard).
"""

from __future__ import annotations

from stripesync.schema.ddl import SECRETS_TABLE

__all__ = ["role_setup_sql"]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _revoke_secrets(schema: str, app: str) -> str:
    table = f"{schema}.{_ident(SECRETS_TABLE)}"
    return (
        "DO $stripesync$ BEGIN IF to_regclass("
        + "'" + table.replace("'", "''") + "'"
        + ") IS NOT NULL THEN EXECUTE "
        + "'" + f"REVOKE ALL ON TABLE {table} FROM {app}".replace("'", "''") + "'"
        + "; END IF; END $stripesync$"
    )


def role_setup_sql(
    schema: str, owner_role: str, app_role: str, *, writes: bool = True
) -> list[str]:
    """The statements that apply the setup (idempotent; run them as the schema's owner or
    a superuser, after the migrations). Roles must exist already. With ``writes`` the
    application role may write through the proxy; without, it only reads."""
    if owner_role == app_role:
        raise ValueError("the application role must differ from the owner role")
    s, owner, app = _ident(schema), _ident(owner_role), _ident(app_role)
    privileges = "SELECT, INSERT, UPDATE, DELETE" if writes else "SELECT"
    return [
        # the owner: everything on the schema's tables, and temporary tables for staging
        f"GRANT USAGE, CREATE ON SCHEMA {s} TO {owner}",
        f"GRANT ALL ON ALL TABLES IN SCHEMA {s} TO {owner}",
        f"GRANT ALL ON ALL SEQUENCES IN SCHEMA {s} TO {owner}",
        "DO $stripesync$ BEGIN EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO "
        + owner.replace("'", "''")
        + "', current_database()); END $stripesync$",
        # nobody else; the application reads, and writes through the proxy (the guard
        # refuses its direct writes at COMMIT)
        f"REVOKE ALL ON SCHEMA {s} FROM PUBLIC",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM PUBLIC",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM {app}",
        f"REVOKE CREATE ON SCHEMA {s} FROM {app}",
        f"GRANT USAGE ON SCHEMA {s} TO {app}",
        f"GRANT {privileges} ON ALL TABLES IN SCHEMA {s} TO {app}",
        # but not the credentials stripesync keeps (a registered webhook's secret); when
        # the table comes later, the migration that creates it revokes the default grant
        _revoke_secrets(s, app),
        # tables the owner role adds later (new collections) get the same grants
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {s} "
        f"REVOKE ALL ON TABLES FROM {app}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {s} "
        f"GRANT {privileges} ON TABLES TO {app}",
    ]
