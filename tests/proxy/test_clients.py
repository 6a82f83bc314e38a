"""Client compatibility, end to end through the proxy with the write handler.

Each client runs against a real proxy in front of the migrated test database, with the
emulator playing Stripe: psql (the simple protocol), asyncpg (the extended protocol with
binary parameters and results, named prepared statements), SQLAlchemy 2's ORM (psycopg
and asyncpg drivers) and node-postgres (``pg`` from npm, run by Node). psycopg 3 itself
is the client of tests/proxy/test_writes.py (text and binary parameters, prepared
statements, pipelines, executemany).

No test skips: a missing ``node`` or ``npm`` fails with the reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import orm
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from stripesync.db.embedded import pg_bin_dir
from tests.proxy.writes_fixtures import WriteRig

NODE_DIR = Path(__file__).parent / "node"


def _params(rig: WriteRig) -> dict[str, str]:
    """The proxy's connection parameters (host, port, user, password, dbname)."""
    params = conninfo_to_dict(rig.url)
    return {k: str(v) for k, v in params.items() if v is not None}


def _customer_ids(rig: WriteRig) -> list[str]:
    customers = rig.stripe.v1.customers.list({"limit": 100}).auto_paging_iter()
    return sorted(c.id for c in customers)


def _stored(rig: WriteRig) -> list[tuple[Any, ...]]:
    return rig.rows("SELECT id, email, name, metadata FROM stripe.customer ORDER BY email")


# ---- psql (the simple protocol) -------------------------------------------------------------


def _psql(rig: WriteRig, *commands: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    args = [str(pg_bin_dir() / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-A", "-t"]
    for command in commands:
        args += ["-c", command]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env["PGCONNECT_TIMEOUT"] = "10"
    proc = subprocess.run(
        [*args, rig.url], capture_output=True, text=True, env=env, timeout=30, check=False
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_psql(writes: WriteRig) -> None:
    made = _psql(
        writes,
        "INSERT INTO stripe.customer (email, name, metadata) "
        "VALUES ('psql@example.com', 'Psql', '{\"via\": \"psql\"}') RETURNING id, email",
    )
    lines = made.stdout.splitlines()
    assert len(lines) == 2 and lines[1] == "INSERT 0 1", made.stdout
    cid, email = lines[0].split("|")
    assert re.fullmatch(r"cus_\w+", cid) and email == "psql@example.com"
    got = writes.stripe.v1.customers.retrieve(cid)
    assert (got.email, got.name, got.metadata.to_dict()) == (
        "psql@example.com",
        "Psql",
        {"via": "psql"},
    )

    other = _psql(writes, "INSERT INTO stripe.customer (email) VALUES ('gone@example.com')")
    assert other.stdout.strip() == "INSERT 0 1"
    (gone,) = [i for i in _customer_ids(writes) if i != cid]

    updated = _psql(
        writes,
        f"UPDATE stripe.customer SET name = upper(name), metadata = metadata || "
        f"'{{\"step\": \"2\"}}' WHERE id = '{cid}' RETURNING name",
    )
    assert updated.stdout.splitlines() == ["PSQL", "UPDATE 1"]
    deleted = _psql(writes, f"DELETE FROM stripe.customer WHERE id = '{gone}'")
    assert deleted.stdout.strip() == "DELETE 1"

    refused = _psql(
        writes,
        "\\set VERBOSITY verbose",
        f"UPDATE stripe.customer SET tax_exempt = 'sometimes' WHERE id = '{cid}'",
        "SELECT 'not reached'",
        check=False,
    )
    assert refused.returncode == 1 and "not reached" not in refused.stdout
    error = refused.stderr.splitlines()
    assert re.match(r"ERROR:  22023: .*tax_exempt", error[0]), refused.stderr
    assert any(line.startswith("DETAIL:  Stripe refused POST /v1/customers/") for line in error)

    got = writes.stripe.v1.customers.retrieve(cid)
    assert (got.name, got.metadata.to_dict(), got.tax_exempt) == (
        "PSQL", {"via": "psql", "step": "2"}, "none",
    )  # fmt: skip
    assert _customer_ids(writes) == [cid]
    assert _stored(writes) == [(cid, "psql@example.com", "PSQL", {"via": "psql", "step": "2"})]
    assert writes.handler.calls == {"query": 5, "execute": 0, "passed": 0}


# ---- asyncpg (the extended protocol, binary) --------------------------------------------------


async def _asyncpg_session(rig: WriteRig) -> dict[str, Any]:
    p = _params(rig)
    conn = await asyncpg.connect(
        host=p["host"], port=int(p["port"]), user=p["user"], password=p.get("password"),
        database=p["dbname"], ssl=False,
    )  # fmt: skip
    out: dict[str, Any] = {}
    try:
        row = await conn.fetchrow(
            "INSERT INTO stripe.customer (email, name) VALUES ($1, $2) "
            "RETURNING id, email, created",
            "apg@example.com",
            "Apg",
        )
        assert row is not None
        out["insert"] = dict(row)

        # a named prepared statement (Parse once, Describe, then Bind/Execute per row)
        stmt = await conn.prepare(
            "INSERT INTO stripe.customer (email, balance) VALUES ($1, $2) RETURNING id, balance"
        )
        assert [a.name for a in stmt.get_attributes()] == ["id", "balance"]
        out["prepared"] = [tuple(await stmt.fetchrow(f"p{n}@example.com", n)) for n in (1, 2, 3)]

        await conn.executemany(
            "INSERT INTO stripe.customer (email, balance) VALUES ($1, $2)",
            [(f"many{n}@example.com", 10 * n) for n in (1, 2)],
        )

        # jsonb in binary format
        status = await conn.execute(
            "UPDATE stripe.customer SET metadata = $1::jsonb, balance = balance + $2 "
            "WHERE email = $3",
            json.dumps({"via": "asyncpg"}),
            5,
            "p1@example.com",
        )
        out["update_status"] = status
        out["updated"] = await conn.fetch(
            "UPDATE stripe.customer SET name = $1 WHERE email LIKE $2 RETURNING email, name",
            "Many",
            "many%",
        )
        out["delete_status"] = await conn.execute(
            "DELETE FROM stripe.customer WHERE id = $1", out["prepared"][2][0]
        )

        # a Stripe refusal: the asyncpg exception of its SQLSTATE
        with pytest.raises(asyncpg.InvalidParameterValueError) as info:
            await conn.execute(
                "UPDATE stripe.customer SET tax_exempt = $1 WHERE id = $2",
                "sometimes",
                out["insert"]["id"],
            )
        out["refused"] = (info.value.sqlstate, info.value.message, info.value.detail)

        # a transaction left failed by a refusal
        tx = conn.transaction()
        await tx.start()
        await conn.execute(
            "UPDATE stripe.customer SET name = $1 WHERE id = $2", "InTx", out["insert"]["id"]
        )
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute(
                "INSERT INTO stripe.subscription (customer_id, items) VALUES ($1, $2::jsonb)",
                out["insert"]["id"],
                json.dumps([{"price": "price_missing"}]),
            )
        with pytest.raises(asyncpg.InFailedSQLTransactionError):
            await conn.fetchval("SELECT 1")
        with pytest.raises(asyncpg.InFailedSQLTransactionError):
            await stmt.fetchrow("never@example.com", 0)
        await tx.rollback()
        out["after"] = [tuple(r) for r in await conn.fetch(
            "SELECT email, name, balance, metadata FROM stripe.customer ORDER BY email"
        )]  # fmt: skip
    finally:
        await conn.close()
    return out


def test_asyncpg(writes: WriteRig) -> None:
    out = asyncio.run(_asyncpg_session(writes))
    # every write went the extended way, binary both ways, through named statements
    assert writes.handler.calls == {"query": 0, "execute": 12, "passed": 0}
    claimed = writes.handler.claimed
    assert all(c.parse.name and c.bind.statement == c.parse.name for c in claimed)
    assert all(c.bind.result_formats == (1,) for c in claimed if "RETURNING" in c.parse.query)
    assert all(set(c.bind.param_formats) == {1} for c in claimed)
    prepared = [c for c in claimed if c.parse.query.endswith("RETURNING id, balance")]
    assert len(prepared) == 3 and len({c.parse.name for c in prepared}) == 1
    cid = out["insert"]["id"]
    assert re.fullmatch(r"cus_\w+", cid) and out["insert"]["email"] == "apg@example.com"
    assert isinstance(out["insert"]["created"], datetime)
    assert (
        int(out["insert"]["created"].timestamp())
        == writes.stripe.v1.customers.retrieve(cid).created
    )
    assert [balance for _, balance in out["prepared"]] == [1, 2, 3]
    assert out["update_status"] == "UPDATE 1" and out["delete_status"] == "DELETE 1"
    assert sorted(tuple(r) for r in out["updated"]) == [
        ("many1@example.com", "Many"), ("many2@example.com", "Many"),
    ]  # fmt: skip
    sqlstate, message, detail = out["refused"]
    assert sqlstate == "22023" and "tax_exempt" in message
    assert detail.startswith(f"Stripe refused POST /v1/customers/{cid}")
    # the write Stripe accepted inside the rolled-back transaction stays (docs/proxy.md)
    assert out["after"] == [
        ("apg@example.com", "InTx", 0, "{}"),  # jsonb as text: asyncpg's default codec
        ("many1@example.com", "Many", 10, "{}"),
        ("many2@example.com", "Many", 20, "{}"),
        ("p1@example.com", None, 6, '{"via": "asyncpg"}'),
        ("p2@example.com", None, 2, "{}"),
    ]
    at_stripe = {
        c.email: (c.name, c.balance, c.metadata.to_dict())
        for c in writes.stripe.v1.customers.list({"limit": 100}).auto_paging_iter()
    }
    assert at_stripe == {
        "apg@example.com": ("InTx", 0, {}),
        "many1@example.com": ("Many", 10, {}),
        "many2@example.com": ("Many", 20, {}),
        "p1@example.com": (None, 6, {"via": "asyncpg"}),
        "p2@example.com": (None, 2, {}),
    }
    assert writes.rows("SELECT count(*) FROM stripe.subscription") == [(0,)]
    assert writes.rows("SELECT collection FROM stripe._deletions") == [("customer",)]


async def _asyncpg_cursor(rig: WriteRig) -> tuple[list[str], list[str]]:
    p = _params(rig)
    conn = await asyncpg.connect(
        host=p["host"], port=int(p["port"]), user=p["user"], password=p.get("password"),
        database=p["dbname"], ssl=False,
    )  # fmt: skip
    try:
        async with conn.transaction():
            # a cursor fetches through a portal, 2 rows per Execute (PortalSuspended between)
            emails = [
                row["email"]
                async for row in conn.cursor(
                    "INSERT INTO stripe.customer (email) SELECT 'cur' || g || '@example.com' "
                    "FROM generate_series(1, 5) AS g RETURNING email",
                    prefetch=2,
                )
            ]
            cursor = await conn.cursor(
                "UPDATE stripe.customer SET name = 'Cursor' WHERE email LIKE 'cur%' "
                "RETURNING email"
            )
            first = [r["email"] for r in await cursor.fetch(3)]
        return emails, first
    finally:
        await conn.close()


def test_asyncpg_cursor_fetches_a_write_in_batches(writes: WriteRig) -> None:
    emails, first = asyncio.run(_asyncpg_cursor(writes))
    made = [f"cur{n}@example.com" for n in range(1, 6)]
    assert sorted(emails) == made  # all five, across three Executes of one portal
    assert len(first) == 3 and set(first) <= set(made)
    # the whole UPDATE was made before its first rows came back, as in PostgreSQL
    names = {c.email: c.name for c in writes.stripe.v1.customers.list({"limit": 100}).data}
    assert names == dict.fromkeys(made, "Cursor")
    assert writes.rows("SELECT count(*) FROM stripe.customer WHERE name = 'Cursor'") == [(5,)]
    # three Executes of the INSERT's portal reached the proxy; the handler ran once
    inserts = [c for c in writes.handler.claimed if c.parse.query.startswith("INSERT")]
    assert len(inserts) == 1 and inserts[0].execute.max_rows == 2


# ---- SQLAlchemy 2 ORM -----------------------------------------------------------------------


class Base(orm.DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customer"
    __table_args__ = {"schema": "stripe"}

    # Stripe assigns id and created: the ORM reads them back with INSERT ... RETURNING
    id: orm.Mapped[str] = orm.mapped_column(
        sa.Text, primary_key=True, server_default=sa.FetchedValue()
    )
    email: orm.Mapped[str | None] = orm.mapped_column(sa.Text)
    name: orm.Mapped[str | None] = orm.mapped_column(sa.Text)
    meta: orm.Mapped[dict[str, Any] | None] = orm.mapped_column("metadata", JSONB)
    created: orm.Mapped[datetime | None] = orm.mapped_column(
        sa.DateTime(timezone=True), server_default=sa.FetchedValue()
    )


class Product(Base):
    __tablename__ = "product"
    __table_args__ = {"schema": "stripe"}

    id: orm.Mapped[str] = orm.mapped_column(
        sa.Text, primary_key=True, server_default=sa.FetchedValue()
    )
    name: orm.Mapped[str] = orm.mapped_column(sa.Text)
    active: orm.Mapped[bool | None] = orm.mapped_column(
        sa.Boolean, server_default=sa.FetchedValue()
    )
    meta: orm.Mapped[dict[str, Any] | None] = orm.mapped_column("metadata", JSONB)


@pytest.fixture
def engine(writes: WriteRig) -> Iterator[sa.Engine]:
    p = _params(writes)
    url = sa.URL.create(
        "postgresql+psycopg", username=p["user"], password=p.get("password"),
        host=p["host"], port=int(p["port"]), database=p["dbname"],
    )  # fmt: skip
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


def test_sqlalchemy_orm(writes: WriteRig, engine: sa.Engine) -> None:
    with orm.Session(engine, expire_on_commit=False) as session:
        ada = Customer(email="ada@example.com", name="Ada", meta={"plan": "gold"})
        bob = Customer(email="bob@example.com")
        session.add_all([ada, bob])
        session.add(Product(name="Book", meta={"isbn": "1"}))
        session.commit()
        assert re.fullmatch(r"cus_\w+", ada.id) and re.fullmatch(r"cus_\w+", bob.id)
        assert isinstance(ada.created, datetime)

        ada.name = "Ada L."
        ada.meta = {"plan": "platinum"}
        session.commit()

        session.delete(bob)
        session.commit()

        book = session.scalars(sa.select(Product)).one()
        assert re.fullmatch(r"prod_\w+", book.id) and book.active is True
        book.active = False
        session.commit()

    # reading back through the proxy, in a fresh session
    with orm.Session(engine) as session:
        customers = session.scalars(sa.select(Customer).order_by(Customer.email)).all()
        assert [(c.id, c.email, c.name, c.meta) for c in customers] == [
            (ada.id, "ada@example.com", "Ada L.", {"plan": "platinum"})
        ]
        # a refusal is the DBAPI error of its SQLSTATE; the session's rollback cannot undo
        # the UPDATE Stripe accepted before it
        session.execute(sa.update(Customer).where(Customer.id == ada.id).values(name="n"))
        with pytest.raises(sa.exc.IntegrityError) as info:
            session.execute(
                sa.insert(Product).values(name=None)  # type: ignore[arg-type]
            )
        assert info.value.orig is not None and info.value.orig.sqlstate == "23502"  # type: ignore[attr-defined]
        session.rollback()

    # every write of the ORM went the extended way (psycopg binds server-side)
    assert writes.handler.calls == {"query": 0, "execute": 8, "passed": 0}
    got = writes.stripe.v1.customers.retrieve(ada.id)
    assert (got.email, got.name, got.metadata.to_dict()) == (
        "ada@example.com",
        "n",
        {"plan": "platinum"},
    )
    assert got.created == int(ada.created.timestamp())  # type: ignore[union-attr]
    assert _customer_ids(writes) == [ada.id]
    product = writes.stripe.v1.products.retrieve(book.id)
    assert (product.name, product.active, product.metadata.to_dict()) == (
        "Book",
        False,
        {"isbn": "1"},
    )
    assert writes.rows("SELECT id, name, active FROM stripe.product") == [(book.id, "Book", False)]
    assert writes.rows("SELECT id FROM stripe._deletions") == [(bob.id,)]


async def _sqlalchemy_asyncpg(rig: WriteRig) -> tuple[str, str | None]:
    p = _params(rig)
    url = sa.URL.create(
        "postgresql+asyncpg", username=p["user"], password=p.get("password"),
        host=p["host"], port=int(p["port"]), database=p["dbname"],
    )  # fmt: skip
    engine = create_async_engine(url, poolclass=sa.pool.NullPool)
    try:
        async with AsyncSession(engine, expire_on_commit=False) as session:
            eve = Customer(email="eve@example.com", meta={"via": "asyncpg"})
            session.add(eve)
            await session.commit()
            eve.name = "Eve"
            await session.commit()
            return eve.id, eve.name
    finally:
        await engine.dispose()


def test_sqlalchemy_orm_with_asyncpg(writes: WriteRig) -> None:
    cid, name = asyncio.run(_sqlalchemy_asyncpg(writes))
    assert re.fullmatch(r"cus_\w+", cid) and name == "Eve"
    got = writes.stripe.v1.customers.retrieve(cid)
    assert (got.email, got.name, got.metadata.to_dict()) == (
        "eve@example.com",
        "Eve",
        {"via": "asyncpg"},
    )
    assert _stored(writes) == [(cid, "eve@example.com", "Eve", {"via": "asyncpg"})]


# ---- node-postgres ---------------------------------------------------------------------------


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH: the node-postgres test needs Node.js and npm")
    return path


def _node_modules() -> None:
    if (NODE_DIR / "node_modules" / "pg" / "package.json").exists():
        return
    proc = subprocess.run(
        [_tool("npm"), "install", "--no-audit", "--no-fund"],
        cwd=NODE_DIR, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"npm install failed in {NODE_DIR}:\n{proc.stderr}"


def test_node_postgres(writes: WriteRig) -> None:
    node = _tool("node")
    _node_modules()
    p = _params(writes)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(
        PGHOST=p["host"], PGPORT=p["port"], PGUSER=p["user"], PGPASSWORD=p.get("password", ""),
        PGDATABASE=p["dbname"],
    )  # fmt: skip
    proc = subprocess.run(
        [node, "pg_client.js"], cwd=NODE_DIR, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert writes.handler.calls == {"query": 0, "execute": 6, "passed": 0}
    names = [c.parse.name for c in writes.handler.claimed]
    assert names == ["", "node-insert", "node-insert", "", "", ""]
    assert all(set(c.bind.param_formats) <= {0} for c in writes.handler.claimed)  # text

    insert = out["insert"]
    cid = insert["id"]
    assert (insert["command"], insert["rowCount"]) == ("INSERT", 1)
    assert insert["fields"] == ["id", "email", "name", "metadata", "created"]
    assert re.fullmatch(r"cus_\w+", cid)
    assert (insert["email"], insert["name"], insert["metadata"]) == (
        "node@example.com", "Node", {"client": "pg"},
    )  # fmt: skip
    assert insert["createdIsDate"] is True
    # balance is bigint: pg returns int8 as a string
    assert [(r["rowCount"], r["balance"]) for r in out["prepared"]] == [(1, "100"), (1, "200")]
    assert out["update"] == {
        "command": "UPDATE",
        "rowCount": 1,
        "rows": [{"name": "Node Renamed", "metadata": {"client": "pg", "step": "2"}}],
    }
    assert out["delete"] == {"command": "DELETE", "rowCount": 1}
    refused = out["refused"]
    assert refused["code"] == "22023" and "tax_exempt" in refused["message"]
    assert refused["detail"].startswith(f"Stripe refused POST /v1/customers/{cid}")
    kept = out["prepared"][0]["id"]
    assert out["after"] == [{"id": kept, "name": None}, {"id": cid, "name": "Node Renamed"}]

    got = writes.stripe.v1.customers.retrieve(cid)
    assert (got.name, got.metadata.to_dict(), got.tax_exempt) == (
        "Node Renamed", {"client": "pg", "step": "2"}, "none",
    )  # fmt: skip
    assert int(insert["created"]) == got.created
    assert _customer_ids(writes) == sorted([cid, kept])
    assert writes.rows("SELECT id FROM stripe._deletions") == [(out["prepared"][1]["id"],)]
