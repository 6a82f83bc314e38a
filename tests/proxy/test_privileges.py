"""The proxy grants nothing PostgreSQL would not: each write runs straight to PostgreSQL
(in a transaction rolled back, so the schema's guard never fires) and through the
proxy, for the simple, extended and prepared protocols, with and without RETURNING. Both
must end alike: the same SQLSTATE, or the same row count; and when PostgreSQL refuses,
the emulator's request log shows that nothing was asked of Stripe."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from stripesync.proxy.roles import role_setup_sql
from tests.plugins.postgres import PgRole, PgServer, _private_dir
from tests.proxy.conftest import RunningProxy
from tests.proxy.writes_fixtures import WriteRig, handler_proxy

PROTOCOLS = ("simple", "extended", "prepared")


@dataclass(frozen=True)
class Roles:
    reader: PgRole  # SELECT only (role setup without writes)
    writer: PgRole  # the role setup's application role; a member of reader
    columns: PgRole  # on customer: SELECT (id, email, name), INSERT (email, name), UPDATE (email)
    no_usage: PgRole  # table privileges, no USAGE on the schema
    tenant: PgRole  # writer privileges under row-level security: rows 'mine…' only


@pytest.fixture(scope="module")
def roles(stripe_database: str, pg_server: PgServer) -> Iterator[Roles]:
    owner = pg_server.create_role()
    made = Roles(*(pg_server.create_role(pg_server.unique_name(n)) for n in Roles.__annotations__))
    names = [owner.name, *(r.name for r in vars(made).values())]
    with psycopg.connect(stripe_database, autocommit=True) as conn:
        setup = role_setup_sql("stripe", owner.name, made.writer.name)
        setup += role_setup_sql("stripe", owner.name, made.reader.name, writes=False)
        setup += role_setup_sql("stripe", owner.name, made.columns.name, writes=False)
        setup += role_setup_sql("stripe", owner.name, made.tenant.name)
        for statement in setup:
            conn.execute(statement)  # type: ignore[arg-type]
        r, w, c, n, t = (f'"{role.name}"' for role in vars(made).values())
        for statement in (
            f"GRANT {r} TO {w}",
            f"GRANT INSERT (email, name), UPDATE (email) ON stripe.customer TO {c}",
            f"REVOKE SELECT ON stripe.customer FROM {c}",
            f"GRANT SELECT (id, email, name, _parent_id) ON stripe.customer TO {c}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA stripe TO {n}",
            "ALTER TABLE stripe.customer ENABLE ROW LEVEL SECURITY",
            f"CREATE POLICY open ON stripe.customer TO {w}, {r}, {c}, {n} "
            "USING (true) WITH CHECK (true)",
            f"CREATE POLICY see ON stripe.customer FOR SELECT TO {t} USING (true)",
            f"CREATE POLICY add ON stripe.customer FOR INSERT TO {t} "
            "WITH CHECK (email LIKE 'mine%')",
            f"CREATE POLICY change ON stripe.customer FOR UPDATE TO {t} "
            "USING (email LIKE 'mine%') WITH CHECK (email LIKE 'mine%')",
            f"CREATE POLICY remove ON stripe.customer FOR DELETE TO {t} "
            "USING (email LIKE 'mine%')",
            # a function that runs with its owner's (the superuser's) rights
            "CREATE OR REPLACE FUNCTION public.definer_name() RETURNS text "
            "LANGUAGE sql SECURITY DEFINER AS $$ SELECT 'from a definer' $$",
        ):
            conn.execute(statement)  # type: ignore[arg-type]
    try:
        yield made
    finally:
        with psycopg.connect(stripe_database, autocommit=True) as conn:
            conn.execute("ALTER TABLE stripe.customer DISABLE ROW LEVEL SECURITY")
            for policy in ("open", "see", "add", "change", "remove"):
                conn.execute(f"DROP POLICY IF EXISTS {policy} ON stripe.customer")  # type: ignore[arg-type]
            conn.execute("DROP FUNCTION IF EXISTS public.definer_name()")
            for name in names:
                conn.execute(f'DROP OWNED BY "{name}"')  # type: ignore[arg-type]
        for name in names:
            pg_server.drop_role(name)


@dataclass(frozen=True)
class Case:
    role: str  # a field of Roles
    sql: str  # {mine} / {other}: the ids of the seeded customers; RETURNING is added
    expected: str | int  # a SQLSTATE, or the row count
    session: tuple[str, ...] = ()  # run first on the session, outside any transaction
    read_only_transaction: bool = False


CASES: dict[str, Case] = {
    "no table privilege: INSERT": Case(
        "reader", "INSERT INTO stripe.customer (email) VALUES ('new@example.com')", "42501"
    ),
    "no table privilege: UPDATE": Case(
        "reader", "UPDATE stripe.customer SET name = 'n' WHERE id = '{mine}'", "42501"
    ),
    "no table privilege: DELETE": Case(
        "reader", "DELETE FROM stripe.customer WHERE id = '{mine}'", "42501"
    ),
    "no table privilege: ON CONFLICT": Case(
        "reader",
        "INSERT INTO stripe.customer (id, name) VALUES ('{mine}', 'n') "
        "ON CONFLICT (id) DO UPDATE SET name = excluded.name",
        "42501",
    ),
    "column privilege: INSERT of a granted column": Case(
        "columns", "INSERT INTO stripe.customer (email) VALUES ('new@example.com')", 1
    ),
    "column privilege: INSERT of another column": Case(
        "columns",
        "INSERT INTO stripe.customer (email, description) VALUES ('new@example.com', 'd')",
        "42501",
    ),
    "column privilege: UPDATE of a granted column": Case(
        "columns", "UPDATE stripe.customer SET email = 'mine2@example.com' WHERE id = '{mine}'", 1
    ),
    "column privilege: UPDATE of another column": Case(
        "columns", "UPDATE stripe.customer SET name = 'n' WHERE id = '{mine}'", "42501"
    ),
    "column privilege: RETURNING a column the role may not read": Case(
        "columns",
        "INSERT INTO stripe.customer (email) VALUES ('new@example.com') RETURNING balance",
        "42501",
    ),
    "column privilege: DELETE": Case(
        "columns", "DELETE FROM stripe.customer WHERE id = '{mine}'", "42501"
    ),
    "no schema usage": Case(
        "no_usage", "UPDATE stripe.customer SET name = 'n' WHERE id = '{mine}'", "42501"
    ),
    "RLS USING: UPDATE of a hidden row": Case(
        "tenant", "UPDATE stripe.customer SET name = 'n' WHERE id = '{other}'", 0
    ),
    "RLS USING: UPDATE of every row": Case(
        "tenant", "UPDATE stripe.customer SET name = 'n'", 1
    ),
    "RLS WITH CHECK: UPDATE out of the policy": Case(
        "tenant",
        "UPDATE stripe.customer SET email = 'theirs@example.com' WHERE id = '{mine}'",
        "42501",
    ),
    "RLS WITH CHECK: INSERT out of the policy": Case(
        "tenant", "INSERT INTO stripe.customer (email) VALUES ('theirs@example.com')", "42501"
    ),
    "RLS WITH CHECK: INSERT within the policy": Case(
        "tenant", "INSERT INTO stripe.customer (email) VALUES ('mine3@example.com')", 1
    ),
    "RLS USING: DELETE of every row": Case("tenant", "DELETE FROM stripe.customer", 1),
    "RLS: ON CONFLICT updating a hidden row": Case(
        "tenant",
        "INSERT INTO stripe.customer (id, email) VALUES ('{other}', 'mine4@example.com') "
        "ON CONFLICT (id) DO UPDATE SET name = 'n'",
        "42501",
    ),
    "ON CONFLICT DO UPDATE with the privileges": Case(
        "writer",
        "INSERT INTO stripe.customer (id, name) VALUES ('{mine}', 'n') "
        "ON CONFLICT (id) DO UPDATE SET name = excluded.name",
        1,
    ),
    "READ ONLY transaction": Case(
        "writer",
        "UPDATE stripe.customer SET name = 'n' WHERE id = '{mine}'",
        "25006",
        read_only_transaction=True,
    ),
    "default_transaction_read_only": Case(
        "writer",
        "INSERT INTO stripe.customer (email) VALUES ('new@example.com')",
        "25006",
        session=("SET default_transaction_read_only = on",),
    ),
    "SET ROLE to a weaker role": Case(
        "writer",
        "DELETE FROM stripe.customer WHERE id = '{mine}'",
        "42501",
        session=("SET ROLE {reader}",),
    ),
    "SECURITY DEFINER function, role without privilege": Case(
        "reader",
        "UPDATE stripe.customer SET name = public.definer_name() WHERE id = '{mine}'",
        "42501",
    ),
    "SECURITY DEFINER function, role with privilege": Case(
        "writer",
        "UPDATE stripe.customer SET name = public.definer_name() WHERE id = '{mine}'",
        1,
    ),
}


def _seed(writes: WriteRig) -> dict[str, str]:
    """Two customers, made through the proxy as the superuser: {mine} and {other}."""
    with writes.connect() as conn:
        cur = conn.execute(
            "INSERT INTO stripe.customer (email) VALUES ('mine1@example.com'), "
            "('other1@example.com') RETURNING id"
        )
        mine, other = (row[0] for row in cur.fetchall())
    writes.emulator.controls.clear_requests()
    return {"mine": mine, "other": other}


def _run(conn: psycopg.Connection[Any], sql: str, protocol: str, returning: bool) -> str | int:
    """The statement's SQLSTATE, or its row count (the rows RETURNING gave)."""
    if returning and " RETURNING " not in sql:
        sql += " RETURNING id, name"
    try:
        if protocol == "simple":
            cur: psycopg.Cursor[Any] = psycopg.ClientCursor(conn)
            cur.execute(sql)
        else:
            cur = conn.execute(sql, prepare=protocol == "prepared")
        return len(cur.fetchall()) if returning else cur.rowcount
    except psycopg.Error as e:
        assert e.sqlstate is not None, e
        return e.sqlstate


def _outcome(url: str, case: Case, sql: str, protocol: str, returning: bool, *, direct: bool,
             reader: str) -> str | int:  # fmt: skip
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in case.session:
            conn.execute(statement.format(reader=f'"{reader}"'))  # type: ignore[arg-type]
        if not direct and not case.read_only_transaction:
            return _run(conn, sql, protocol, returning)
        # straight to PostgreSQL: in a transaction rolled back (the guard refuses COMMIT)
        conn.execute("BEGIN READ ONLY" if case.read_only_transaction else "BEGIN")
        try:
            return _run(conn, sql, protocol, returning)
        finally:
            conn.execute("ROLLBACK")


@pytest.mark.parametrize("name", list(CASES))
def test_the_proxy_refuses_what_postgresql_refuses(
    name: str, writes: WriteRig, roles: Roles
) -> None:
    case = CASES[name]
    role: PgRole = getattr(roles, case.role)
    dbname = conninfo_to_dict(writes.database_url)["dbname"]
    direct_url = role.url(dbname)
    proxy_url = writes.proxy.url(direct_url)
    for protocol in PROTOCOLS:
        for returning in (False, True):
            ids = _seed(writes)
            sql = case.sql.format(**ids)
            direct = _outcome(direct_url, case, sql, protocol, returning, direct=True,
                              reader=roles.reader.name)  # fmt: skip
            before = writes.rows("SELECT id, email, name, _raw FROM stripe.customer ORDER BY id")
            proxied = _outcome(proxy_url, case, sql, protocol, returning, direct=False,
                               reader=roles.reader.name)  # fmt: skip
            where = f"{protocol}, RETURNING {returning}"
            assert (direct, proxied) == (case.expected, case.expected), where
            asked = [
                r for r in writes.emulator.controls.requests() if r["method"] in ("POST", "DELETE")
            ]
            if isinstance(case.expected, str):  # refused: Stripe never asked, nothing stored
                assert asked == [], where
                assert writes.rows(
                    "SELECT id, email, name, _raw FROM stripe.customer ORDER BY id"
                ) == before, where
            else:
                assert len(asked) == case.expected, (where, asked)
            with writes.direct() as conn:
                conn.execute("TRUNCATE stripe.customer, stripe._deletions")


def test_a_direct_write_of_a_granted_role_is_refused_at_commit(
    writes: WriteRig, roles: Roles
) -> None:
    ids = _seed(writes)
    dbname = conninfo_to_dict(writes.database_url)["dbname"]
    with psycopg.connect(roles.writer.url(dbname), autocommit=True) as conn:
        for sql in (
            "INSERT INTO stripe.customer (email) VALUES ('direct@example.com')",
            f"UPDATE stripe.customer SET name = 'direct' WHERE id = '{ids['mine']}'",
            f"DELETE FROM stripe.customer WHERE id = '{ids['other']}'",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="stripesync proxy"):
                conn.execute(sql)  # type: ignore[arg-type]
        # at COMMIT, whatever was set
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute("SET CONSTRAINTS ALL DEFERRED")
            conn.execute("UPDATE stripe.customer SET name = 'direct'")
    assert sorted(writes.rows("SELECT id, name FROM stripe.customer")) == sorted(
        [(ids["mine"], None), (ids["other"], None)]
    )
    assert writes.emulator.controls.requests() == []


@pytest.fixture(scope="module")
def standby(pg_server: PgServer, roles: Roles) -> Iterator[str]:
    """A hot standby of the suite's server (roles and policies replicated): its TCP
    host:port as a URL template for a database."""
    parent = _private_dir("standby")
    server = pg_server.start_standby(parent / "pg")
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        server.stop()
        shutil.rmtree(parent, ignore_errors=True)


def test_a_hot_standby_refuses_the_write_before_stripe(
    writes: WriteRig, roles: Roles, standby: str, start_proxy: Callable[..., RunningProxy]
) -> None:
    ids = _seed(writes)
    dbname = conninfo_to_dict(writes.database_url)["dbname"]
    host, port = standby.split(":")
    url = make_conninfo(roles.writer.url(dbname), host=host, port=port)
    deadline = time.monotonic() + 30
    with psycopg.connect(url, autocommit=True) as conn:  # the seeded rows replayed
        while conn.execute("SELECT count(*) FROM stripe.customer").fetchone() != (2,):
            assert time.monotonic() < deadline, "the standby did not catch up"
            time.sleep(0.05)
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    # a proxy in front of the standby; its store would write to the primary
    case = Case("writer", "UPDATE stripe.customer SET name = 'n' WHERE id = '{mine}'", "25006")
    sql = case.sql.format(**ids)
    with handler_proxy(start_proxy, url, writes.api, writes.database_url) as (proxy, _):
        for protocol in PROTOCOLS:
            for returning in (False, True):
                direct = _outcome(url, case, sql, protocol, returning, direct=True,
                                  reader=roles.reader.name)  # fmt: skip
                proxied = _outcome(proxy.url(url), case, sql, protocol, returning,
                                   direct=False, reader=roles.reader.name)  # fmt: skip
                assert (direct, proxied) == ("25006", "25006"), (protocol, returning)
    assert writes.emulator.controls.requests() == []
