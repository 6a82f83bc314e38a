"""Writes to synced tables through the proxy go to Stripe (the emulator), then the store.

Real psycopg clients talk to a real proxy in front of a real PostgreSQL; the emulator
plays Stripe over HTTP and checks every parameter against the SDK's types.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from stripesync.obs.metrics import REGISTRY
from stripesync.proxy.roles import role_setup_sql
from stripesync.proxy.writes import StripeWriteHandler
from tests.plugins.postgres import PgServer
from tests.proxy.conftest import RunningProxy
from tests.proxy.writes_fixtures import WriteRig, handler_proxy


def _customer(rig: WriteRig, email: str, **values: Any) -> str:
    """A customer made through the proxy; its id."""
    columns = ["email", *values]
    params = [email, *(Jsonb(v) if isinstance(v, dict) else v for v in values.values())]
    with rig.connect() as conn:
        sql = (
            f"INSERT INTO stripe.customer ({', '.join(columns)}) "
            f"VALUES ({', '.join(['%s'] * len(columns))}) RETURNING id"
        )
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    return str(row[0])


def _stripe_customers(rig: WriteRig) -> list[Any]:
    return list(rig.stripe.v1.customers.list({"limit": 100}).auto_paging_iter())


# ---- INSERT ---------------------------------------------------------------------------------


def _written(collection: str, outcome: str) -> float:
    labels = {"collection": collection, "outcome": outcome}
    return REGISTRY.get_sample_value("stripesync_proxy_writes_total", labels) or 0.0


def test_insert_with_the_simple_protocol(writes: WriteRig) -> None:
    accepted, refused = _written("customer", "accepted"), _written("customer", "refused")
    with writes.connect() as conn:
        cur = conn.execute(
            "INSERT INTO stripe.customer (email, name, metadata, balance) "
            "VALUES ('ada@example.com', 'Ada', '{\"plan\": \"gold\"}', -500) "
            "RETURNING id, email, balance, created"
        )
        assert (cur.statusmessage, cur.rowcount) == ("INSERT 0 1", 1)
        assert [d.name for d in cur.description or ()] == ["id", "email", "balance", "created"]
        ((cid, email, balance, created),) = cur.fetchall()
    assert writes.handler.calls == {"query": 1, "execute": 0, "passed": 0}
    assert re.fullmatch(r"cus_\w+", cid) and email == "ada@example.com" and balance == -500
    assert isinstance(created, datetime)
    got = writes.stripe.v1.customers.retrieve(cid)
    assert (got.email, got.name, got.balance) == ("ada@example.com", "Ada", -500)
    assert got.metadata.to_dict() == {"plan": "gold"}
    assert int(created.timestamp()) == got.created
    assert writes.rows("SELECT id, email, name, metadata, balance FROM stripe.customer") == [
        (cid, "ada@example.com", "Ada", {"plan": "gold"}, -500)
    ]
    assert _written("customer", "accepted") == accepted + 1
    with writes.connect() as conn, pytest.raises(psycopg.errors.GeneratedAlways):
        conn.execute("UPDATE stripe.customer SET created = now()")
    assert _written("customer", "refused") == refused + 1


def test_insert_with_text_and_binary_parameters(writes: WriteRig) -> None:
    with writes.connect() as conn:
        cur = conn.execute(
            "INSERT INTO stripe.customer (email, metadata, balance) VALUES (%s, %s, %s) "
            "RETURNING id, email, metadata, balance",
            ["text@example.com", Jsonb({"k": "v"}), 42],
        )
        (text_row,) = cur.fetchall()
        # binary parameters and binary results
        bcur = conn.cursor(binary=True)
        bcur.execute(
            "INSERT INTO stripe.customer (email, address, balance) VALUES (%b, %b, %b) "
            "RETURNING id, email, address, balance, created",
            ["bin@example.com", Jsonb({"city": "Paris", "country": "FR"}), 7],
        )
        (bin_row,) = bcur.fetchall()
        # a prepared statement, executed several times
        ids = []
        for n in range(3):
            prepared = conn.execute(
                "INSERT INTO stripe.customer (email) VALUES (lower(%s)) RETURNING id, email",
                [f"PREP{n}@Example.com"],
                prepare=True,
            )
            ids.append(prepared.fetchone())
        # prepared, binary parameters and results
        for n in range(2):
            bcur.execute(
                "UPDATE stripe.customer SET balance = balance + %b WHERE email = %b "
                "RETURNING balance, livemode, _stripe_time IS NOT NULL",
                [n + 1, "bin@example.com"],
                prepare=True,
            )
            assert bcur.fetchall() == [(7 + (1 if n == 0 else 3), False, True)]
    assert writes.handler.calls["execute"] == 7
    assert text_row[1:] == ("text@example.com", {"k": "v"}, 42)
    assert bin_row[1] == "bin@example.com" and bin_row[3] == 7
    assert bin_row[2]["city"] == "Paris" and isinstance(bin_row[4], datetime)
    assert [row[1] for row in ids if row] == [f"prep{n}@example.com" for n in range(3)]
    address = writes.stripe.v1.customers.retrieve(bin_row[0]).address
    assert (address.city, address.country) == ("Paris", "FR")
    stored = writes.rows("SELECT email FROM stripe.customer ORDER BY email")
    assert [r[0] for r in stored] == [
        "bin@example.com", "prep0@example.com", "prep1@example.com", "prep2@example.com",
        "text@example.com",
    ]  # fmt: skip


def test_insert_select_of_250_rows(writes: WriteRig) -> None:
    with writes.connect() as conn:
        cur = conn.execute(
            "INSERT INTO stripe.customer (email, metadata) "
            "SELECT 'c' || g || '@example.com', jsonb_build_object('n', g::text) "
            "FROM generate_series(1, 250) AS g"
        )
        assert cur.statusmessage == "INSERT 0 250"
        assert conn.execute("SELECT count(*) FROM stripe.customer").fetchone() == (250,)
    stored = writes.rows("SELECT email, metadata->>'n' FROM stripe.customer")
    assert sorted(stored) == sorted((f"c{g}@example.com", str(g)) for g in range(1, 251))
    at_stripe = _stripe_customers(writes)
    assert sorted(c.email for c in at_stripe) == sorted(f"c{g}@example.com" for g in range(1, 251))
    ids = {r[0] for r in writes.rows("SELECT id FROM stripe.customer")}
    assert ids == {c.id for c in at_stripe}


def test_insert_of_a_nested_object_fills_the_path(writes: WriteRig) -> None:
    cid = _customer(writes, "tax@example.com")
    with writes.connect() as conn:
        row = conn.execute(
            "INSERT INTO stripe.tax_id (customer_id, type, value) VALUES (%s, 'eu_vat', %s) "
            "RETURNING id, customer_id, value",
            [cid, "DE123456789"],
        ).fetchone()
        assert row is not None and row[1:] == (cid, "DE123456789")
        with pytest.raises(psycopg.errors.NotNullViolation) as info:
            conn.execute("INSERT INTO stripe.tax_id (type, value) VALUES ('eu_vat', 'x')")
        assert 'column "customer_id" is required to create a tax_id' in str(info.value)
        tax_id = row[0]
        assert (
            conn.execute("DELETE FROM stripe.tax_id WHERE id = %s", [tax_id]).statusmessage
            == "DELETE 1"
        )
    assert writes.rows("SELECT count(*) FROM stripe.tax_id") == [(0,)]
    assert writes.rows("SELECT collection, id FROM stripe._deletions") == [("tax_id", tax_id)]
    listed = writes.stripe.v1.customers.tax_ids.list(cid)
    assert listed.data == []


# ---- UPDATE and DELETE ------------------------------------------------------------------------


def test_update_evaluates_set_expressions_and_where(writes: WriteRig) -> None:
    a = _customer(writes, "a@example.com", metadata={"plan": "gold", "old": "x"})
    b = _customer(writes, "b@example.com", metadata={"plan": "silver"})
    c = _customer(writes, "c@example.com")
    with writes.connect() as conn:
        cur = conn.execute(
            "UPDATE stripe.customer SET metadata = (metadata - 'old') || '{\"a\": \"b\"}', "
            "email = lower(%s) || '+' || email "
            "WHERE metadata ? 'plan' RETURNING id, email, metadata",
            ["NEW"],
        )
        assert cur.statusmessage == "UPDATE 2"
        returned = {row[0]: row[1:] for row in cur.fetchall()}
        # read-after-write: the next query sees the new state
        seen = conn.execute("SELECT id, email FROM stripe.customer ORDER BY email").fetchall()
    assert returned == {
        a: ("new+a@example.com", {"plan": "gold", "a": "b"}),
        b: ("new+b@example.com", {"plan": "silver", "a": "b"}),
    }
    assert seen == [(c, "c@example.com"), (a, "new+a@example.com"), (b, "new+b@example.com")]
    got = writes.stripe.v1.customers.retrieve(a)
    assert got.email == "new+a@example.com"
    assert got.metadata.to_dict() == {"plan": "gold", "a": "b"}  # "old" removed at Stripe too
    assert writes.stripe.v1.customers.retrieve(c).email == "c@example.com"
    with writes.connect() as conn:
        cur = conn.execute("UPDATE stripe.customer SET name = 'none' WHERE false")
        assert cur.statusmessage == "UPDATE 0"
        # NULL unsets: description, then address (jsonb)
        conn.execute(
            "UPDATE stripe.customer SET description = 'd', address = '{\"city\": \"Oslo\"}' "
            "WHERE id = %s",
            [c],
        )
        conn.execute("UPDATE stripe.customer SET description = NULL WHERE id = %s", [c])
    got = writes.stripe.v1.customers.retrieve(c)
    assert got.description is None and got.address.city == "Oslo"


def test_delete_leaves_a_tombstone(writes: WriteRig) -> None:
    keep = _customer(writes, "keep@example.com")
    gone = _customer(writes, "gone@example.com")
    with writes.connect() as conn:
        cur = conn.execute(
            "DELETE FROM stripe.customer WHERE email LIKE %s RETURNING id, email", ["gone%"]
        )
        assert cur.statusmessage == "DELETE 1"
        assert cur.fetchall() == [(gone, "gone@example.com")]
        assert conn.execute("SELECT id FROM stripe.customer").fetchall() == [(keep,)]
    assert writes.rows("SELECT collection, id FROM stripe._deletions") == [("customer", gone)]
    deleted = writes.stripe.v1.customers.retrieve(gone)
    assert deleted.to_dict().get("deleted") is True


def test_subscription_delete_cancels_and_keeps_the_row(writes: WriteRig) -> None:
    cid = _customer(writes, "sub@example.com")
    # a card to pay the first invoice with, so that the subscription starts active
    writes.stripe.v1.customers.update(cid, params={"source": "tok_visa"})
    with writes.connect() as conn:
        (product,) = (
            conn.execute(
                "INSERT INTO stripe.product (name) VALUES ('Gold') RETURNING id"
            ).fetchone()
            or ()
        )
        (price,) = (
            conn.execute(
                "INSERT INTO stripe.price (product_id, currency, unit_amount, recurring) "
                "VALUES (%s, 'usd', 1500, '{\"interval\": \"month\"}') RETURNING id",
                [product],
            ).fetchone()
            or ()
        )
        (sub, status) = (
            conn.execute(
                "INSERT INTO stripe.subscription (customer_id, items) "
                "VALUES (%s, jsonb_build_array(jsonb_build_object('price', %s::text))) "
                "RETURNING id, status",
                [cid, price],
            ).fetchone()
            or ()
        )
        assert status == "active"
        assert conn.execute(
            "SELECT items->'data'->0->'price'->>'id' FROM stripe.subscription"
        ).fetchall() == [(price,)]
        cur = conn.execute("DELETE FROM stripe.subscription WHERE id = %s RETURNING status", [sub])
        assert (cur.statusmessage, cur.fetchall()) == ("DELETE 1", [("canceled",)])
    assert writes.rows("SELECT id, status FROM stripe.subscription") == [(sub, "canceled")]
    assert writes.rows("SELECT count(*) FROM stripe._deletions") == [(0,)]
    assert writes.stripe.v1.subscriptions.retrieve(sub).status == "canceled"


def test_insert_on_conflict_updates_existing_rows_and_creates_new_ones(writes: WriteRig) -> None:
    old = _customer(writes, "old@example.com", name="Old")
    with writes.connect() as conn:
        cur = conn.execute(
            "INSERT INTO stripe.customer AS c (id, email, name) VALUES "
            "(%s, 'renamed@example.com', 'New'), (NULL, 'fresh@example.com', 'Fresh') "
            "ON CONFLICT (id) DO UPDATE SET email = excluded.email, "
            "name = c.name || ' -> ' || excluded.name RETURNING id, email, name",
            [old],
        )
        assert cur.statusmessage == "INSERT 0 2"
        rows = cur.fetchall()
        assert rows[0] == (old, "renamed@example.com", "Old -> New")
        fresh = rows[1][0]
        assert rows[1][1:] == ("fresh@example.com", "Fresh")
        # DO NOTHING: the existing row is left alone, the new one is made
        cur = conn.execute(
            "INSERT INTO stripe.customer (id, email) VALUES (%s, 'x@example.com'), "
            "(NULL, 'other@example.com') ON CONFLICT DO NOTHING",
            [old],
        )
        assert cur.statusmessage == "INSERT 0 1"
        # DO UPDATE ... WHERE false: nothing
        cur = conn.execute(
            "INSERT INTO stripe.customer (id, email) VALUES (%s, 'no@example.com') "
            "ON CONFLICT (id) DO UPDATE SET email = excluded.email WHERE false",
            [old],
        )
        assert cur.statusmessage == "INSERT 0 0"
        # an id Stripe does not have cannot be created with that id
        with pytest.raises(psycopg.errors.NoDataFound, match="Stripe assigns the ids"):
            conn.execute(
                "INSERT INTO stripe.customer (id, email) VALUES ('cus_nope', 'n@example.com') "
                "ON CONFLICT (id) DO UPDATE SET email = excluded.email"
            )
    got = writes.stripe.v1.customers.retrieve(old)
    assert (got.email, got.name) == ("renamed@example.com", "Old -> New")
    assert writes.stripe.v1.customers.retrieve(fresh).email == "fresh@example.com"
    assert sorted(c.email for c in _stripe_customers(writes)) == [
        "fresh@example.com", "other@example.com", "renamed@example.com",
    ]  # fmt: skip


# ---- refusals -------------------------------------------------------------------------------


def test_columns_and_collections_stripe_does_not_let_one_write(writes: WriteRig) -> None:
    cid = _customer(writes, "ro@example.com")
    with writes.connect() as conn:
        with pytest.raises(psycopg.errors.GeneratedAlways) as info:
            conn.execute(
                "INSERT INTO stripe.customer (email, created) VALUES ('x@example.com', now())"
            )
        diag = info.value.diag
        assert diag.message_primary == (
            'column "created" of "stripe.customer" cannot be written on INSERT: Stripe sets '
            "it; POST /v1/customers has no parameter for it"
        )
        assert diag.column_name == "created" and diag.table_name == "customer"
        assert diag.message_hint and "Columns writable on INSERT: " in diag.message_hint
        assert "email" in diag.message_hint and "metadata" in diag.message_hint

        with pytest.raises(psycopg.errors.GeneratedAlways, match='column "id" of'):
            conn.execute("UPDATE stripe.customer SET id = 'cus_x' WHERE id = %s", [cid])
        with pytest.raises(psycopg.errors.GeneratedAlways, match=r'"_raw".*bookkeeping'):
            conn.execute("UPDATE stripe.customer SET _raw = '{}' WHERE true")

        # an unknown column: the simple protocol gets the list of writable columns
        with pytest.raises(psycopg.errors.UndefinedColumn) as unknown:
            conn.execute("INSERT INTO stripe.customer (emale) VALUES ('x')")
        assert unknown.value.diag.message_hint
        assert "email" in unknown.value.diag.message_hint
        # ... and so does the extended protocol, refused at Parse
        with pytest.raises(psycopg.errors.UndefinedColumn) as unknown:
            conn.execute("INSERT INTO stripe.customer (emale) VALUES (%s)", ["x"])
        assert unknown.value.diag.message_hint
        assert "email" in unknown.value.diag.message_hint

        # collections (or operations) Stripe offers no write for
        with pytest.raises(psycopg.errors.WrongObjectType) as none:
            conn.execute("INSERT INTO stripe.balance_transaction (amount) VALUES (1)")
        assert none.value.diag.message_primary == (
            'cannot INSERT into table "stripe.balance_transaction": Stripe does not let one '
            "create a balance_transaction"
        )
        assert none.value.diag.message_hint == (
            "stripe.balance_transaction is read-only: it is kept in sync from Stripe."
        )
        with pytest.raises(psycopg.errors.WrongObjectType) as no_delete:
            conn.execute("DELETE FROM stripe.price WHERE true")
        assert no_delete.value.diag.message_hint == (
            "Writes stripe.price accepts: INSERT (POST /v1/prices), UPDATE (POST "
            "/v1/prices/{price})."
        )
        with pytest.raises(psycopg.errors.WrongObjectType, match="mandate"):
            conn.execute("UPDATE stripe.mandate SET status = 'x'")
    # nothing changed anywhere
    assert [c.id for c in _stripe_customers(writes)] == [cid]
    assert writes.rows("SELECT id, created IS NOT NULL FROM stripe.customer") == [(cid, True)]


def test_extended_protocol_refusals_come_at_parse_and_fail_the_transaction(
    writes: WriteRig,
) -> None:
    cid = _customer(writes, "parse@example.com")
    with writes.connect() as conn:
        # a named, prepared statement: refused when it is prepared, naming what is allowed
        with pytest.raises(psycopg.errors.GeneratedAlways) as info:
            conn.execute(
                "UPDATE stripe.customer SET created = %s WHERE id = %s", [1, cid], prepare=True
            )
        assert info.value.diag.message_hint
        assert "Columns writable on UPDATE: " in info.value.diag.message_hint
        with pytest.raises(psycopg.errors.WrongObjectType, match="balance_transaction"):
            conn.execute("INSERT INTO stripe.balance_transaction (amount) VALUES (%s)", [1])
        # inside a transaction: failed as PostgreSQL leaves it, and ROLLBACK works
        with pytest.raises(psycopg.errors.UndefinedColumn), conn.transaction():
            conn.execute("INSERT INTO stripe.customer (emale) VALUES (%s)", ["x"])
        conn.execute("BEGIN")
        with pytest.raises(psycopg.errors.UndefinedColumn):
            conn.execute("INSERT INTO stripe.customer (emale) VALUES (%s)", ["x"])
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.execute("ROLLBACK")
        # the session goes on, and a good write with the same protocol is made
        conn.execute(
            "UPDATE stripe.customer SET email = %s WHERE id = %s", ["ok@example.com", cid],
            prepare=True,
        )
    assert [c.email for c in _stripe_customers(writes)] == ["ok@example.com"]


def test_a_stripe_refusal_is_an_error_with_stripe_details(writes: WriteRig) -> None:
    cid = _customer(writes, "refused@example.com")
    with writes.connect() as conn:
        with pytest.raises(psycopg.errors.ForeignKeyViolation) as info:
            conn.execute(
                "INSERT INTO stripe.subscription (customer_id, items) "
                'VALUES (%s, \'[{"price": "price_missing"}]\')',
                [cid],
            )
        diag = info.value.diag
        assert diag.message_primary == "No such price: 'price_missing'"
        detail = diag.message_detail or ""
        assert detail.startswith(
            "Stripe refused POST /v1/subscriptions (type invalid_request_error"
        )
        assert "code resource_missing" in detail and "param items[0][price]" in detail
        assert re.search(r"request id req_\w+", detail), detail
        with pytest.raises(psycopg.errors.InvalidParameterValue) as bad_enum:
            conn.execute("UPDATE stripe.customer SET tax_exempt = 'sometimes' WHERE id = %s", [cid])
        assert "tax_exempt" in (bad_enum.value.diag.message_primary or "")
        assert "param tax_exempt" in (bad_enum.value.diag.message_detail or "")
    assert writes.rows("SELECT count(*) FROM stripe.subscription") == [(0,)]
    assert writes.rows("SELECT tax_exempt FROM stripe.customer") == [("none",)]


def test_a_refusal_fails_the_transaction_as_postgresql_would(writes: WriteRig) -> None:
    cid = _customer(writes, "txn@example.com")
    with writes.connect(autocommit=False) as conn:
        conn.execute("CREATE TEMP TABLE notes (x int)")
        conn.execute("INSERT INTO notes VALUES (1)")
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute("UPDATE stripe.customer SET tax_exempt = 'bogus' WHERE id = %s", [cid])
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):  # PostgreSQL refuses it
            conn.execute("UPDATE stripe.customer SET name = 'x'")
        conn.rollback()
        # SAVEPOINT and ROLLBACK TO behave as usual
        conn.execute("CREATE TEMP TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (1)")
        conn.execute("SAVEPOINT before_write")
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute("UPDATE stripe.customer SET tax_exempt = 'bogus' WHERE id = %s", [cid])
        conn.execute("ROLLBACK TO SAVEPOINT before_write")
        conn.execute("INSERT INTO kept VALUES (2)")
        # a write Stripe accepts inside the transaction: ROLLBACK cannot undo it
        conn.execute("UPDATE stripe.customer SET name = 'Kept' WHERE id = %s", [cid])
        assert conn.execute("SELECT name FROM stripe.customer").fetchone() == ("Kept",)
        assert conn.execute("SELECT count(*) FROM kept").fetchone() == (2,)
        conn.rollback()
    assert writes.stripe.v1.customers.retrieve(cid).name == "Kept"
    assert writes.rows("SELECT name, tax_exempt FROM stripe.customer") == [("Kept", "none")]


def test_a_multi_row_failure_keeps_the_rows_stripe_applied(writes: WriteRig) -> None:
    for n in range(6):
        _customer(writes, f"m{n}@example.com", description="bad" if n == 3 else "ok")
    writes.handler.concurrency = 1  # one call at a time: the ones before the failure apply
    with writes.connect() as conn:
        with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
            conn.execute(
                "UPDATE stripe.customer SET name = 'renamed', tax_exempt = "
                "CASE description WHEN 'bad' THEN 'bogus' ELSE 'exempt' END"
            )
        detail = info.value.diag.message_detail or ""
        found = re.search(r"(\d+) of 6 rows were applied at Stripe before the failure", detail)
        assert found, detail
        applied = int(found.group(1))
        assert info.value.diag.message_hint == "ROLLBACK cannot undo a change Stripe already made."
        # the rows Stripe changed are stored; the others are as they were
        stored = conn.execute(
            "SELECT count(*) FILTER (WHERE name = 'renamed' AND tax_exempt = 'exempt'), "
            "count(*) FILTER (WHERE name IS NULL AND tax_exempt = 'none') FROM stripe.customer"
        ).fetchone()
    assert applied == 3
    assert stored == (applied, 6 - applied)
    renamed = [c for c in _stripe_customers(writes) if c.name == "renamed"]
    assert len(renamed) == applied

    writes.handler.concurrency = 8  # concurrently: whatever Stripe applied is stored
    with writes.connect() as conn:
        with pytest.raises(psycopg.errors.InvalidParameterValue) as again:
            conn.execute(
                "UPDATE stripe.customer SET description = description || '!', tax_exempt = "
                "CASE description WHEN 'bad' THEN 'bogus' ELSE 'reverse' END"
            )
        found = re.search(r"(\d+) of 6 rows", again.value.diag.message_detail or "")
        assert found
        stored_now = conn.execute(
            "SELECT count(*) FROM stripe.customer WHERE tax_exempt = 'reverse'"
        ).fetchone()
    at_stripe = [c for c in _stripe_customers(writes) if c.tax_exempt == "reverse"]
    assert stored_now == (int(found.group(1)),) and len(at_stripe) == int(found.group(1))


def test_writes_that_cannot_be_analysed_are_refused(writes: WriteRig) -> None:
    cid = _customer(writes, "safe@example.com")
    refused = [
        "WITH x AS (DELETE FROM stripe.customer RETURNING id) SELECT count(*) FROM x",
        "MERGE INTO stripe.customer c USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE",
        "TRUNCATE stripe.customer",
        "DELETE FROM stripe.customer; SELECT 1",
        "EXPLAIN ANALYZE DELETE FROM stripe.customer",
        "DO $$BEGIN DELETE FROM stripe.customer; END$$",
        "COPY stripe.customer (id) FROM STDIN",
    ]
    with writes.connect() as conn:
        for sql in refused:
            with pytest.raises(psycopg.errors.FeatureNotSupported) as info:
                conn.execute(sql)
            assert str(info.value).startswith("stripesync proxy: "), sql
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="data-modifying WITH"):
            conn.execute(  # the extended protocol too
                "WITH x AS (UPDATE stripe.customer SET name = %s RETURNING id) SELECT * FROM x",
                ["evil"],
            )
        assert conn.execute("SELECT id, name FROM stripe.customer").fetchall() == [(cid, None)]
    assert [(c.id, c.name) for c in _stripe_customers(writes)] == [(cid, None)]


def test_reads_and_other_tables_pass_through(writes: WriteRig) -> None:
    cid = _customer(writes, "read@example.com")
    with writes.connect() as conn:
        assert conn.execute("SELECT email FROM stripe.customer").fetchall() == [
            ("read@example.com",)
        ]
        conn.execute("CREATE TEMP TABLE customer (email text)")  # shadows nothing in stripe
        conn.execute("INSERT INTO customer VALUES ('local')")  # pg_temp: passes through
        conn.execute("UPDATE customer SET email = %s", ["local2"])
        assert conn.execute("SELECT email FROM customer").fetchall() == [("local2",)]
        conn.execute("DROP TABLE customer")
        with conn.transaction():
            locked = conn.execute("SELECT id FROM stripe.customer FOR UPDATE").fetchall()
        assert locked == [(cid,)]
        # an unqualified name the search_path resolves to the synced schema goes to Stripe
        conn.execute("SET search_path = stripe, public")
        cur = conn.execute("UPDATE customer SET name = 'Via path' RETURNING name")
        assert (cur.statusmessage, cur.fetchall()) == ("UPDATE 1", [("Via path",)])
    assert writes.stripe.v1.customers.retrieve(cid).name == "Via path"
    assert writes.handler.calls["passed"] >= 2


def test_a_client_idempotency_key_makes_a_retry_safe(writes: WriteRig) -> None:
    with writes.connect() as conn:
        conn.execute("SET stripesync.idempotency_key = 'order-1234'")
        first = conn.execute(
            "INSERT INTO stripe.customer (email) VALUES ('once@example.com') RETURNING id"
        ).fetchone()
        again = conn.execute(
            "INSERT INTO stripe.customer (email) VALUES ('once@example.com') RETURNING id"
        ).fetchone()
        conn.execute("RESET stripesync.idempotency_key")
        other = conn.execute(
            "INSERT INTO stripe.customer (email) VALUES ('once@example.com') RETURNING id"
        ).fetchone()
    assert first == again != other
    assert len(_stripe_customers(writes)) == 2


def test_pipelines_with_writes_between_reads(writes: WriteRig) -> None:
    with writes.connect() as conn, conn.pipeline():
        a = conn.execute("SELECT 'before'")
        w = conn.execute(
            "INSERT INTO stripe.customer (email) VALUES (%s), (%s) RETURNING email",
            ["p1@example.com", "p2@example.com"],
        )
        b = conn.execute("SELECT count(*) FROM stripe.customer")
        conn.execute("INSERT INTO stripe.customer (email) VALUES (%s)", ["p3@example.com"])
    assert a.fetchone() == ("before",)
    assert (w.statusmessage, w.fetchall()) == (
        "INSERT 0 2", [("p1@example.com",), ("p2@example.com",)]
    )  # fmt: skip
    assert b.fetchone() == (2,)
    assert writes.rows("SELECT count(*) FROM stripe.customer") == [(3,)]


def test_session_parameters_that_are_no_column(writes: WriteRig) -> None:
    with writes.connect() as conn:
        (product,) = (
            conn.execute(
                "INSERT INTO stripe.product (name) VALUES ('Book') RETURNING id"
            ).fetchone()
            or ()
        )
        (price,) = (
            conn.execute(
                "INSERT INTO stripe.price (product_id, currency, unit_amount) "
                "VALUES (%s, 'eur', 2500) RETURNING id",
                [product],
            ).fetchone()
            or ()
        )
        with conn.transaction():
            conn.execute(
                "SELECT set_config('stripesync.params', %s, true)",
                [f'{{"line_items": [{{"price": "{price}", "quantity": 2}}]}}'],
            )
            row = conn.execute(
                "INSERT INTO stripe.checkout_session (mode, success_url) "
                "VALUES ('payment', 'https://example.com/ok') RETURNING id, amount_total"
            ).fetchone()
        assert row is not None and row[1] == 5000
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="JSON object"):
            conn.execute("SET stripesync.params = 'nope'")
            conn.execute("INSERT INTO stripe.product (name) VALUES ('x')")


def test_a_row_locked_by_the_client_is_reported_not_waited_for(writes: WriteRig) -> None:
    cid = _customer(writes, "locked@example.com")
    writes.handler.store_lock_timeout = 0.2
    notices: list[str] = []
    with writes.connect(autocommit=False) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        conn.execute("SELECT * FROM stripe.customer FOR UPDATE")
        cur = conn.execute("UPDATE stripe.customer SET name = 'Changed' WHERE id = %s", [cid])
        assert cur.statusmessage == "UPDATE 1"
        conn.rollback()
    assert writes.stripe.v1.customers.retrieve(cid).name == "Changed"
    assert len(notices) == 1 and notices[0].startswith("Stripe applied the write, but the copy")


def test_the_role_setup_keeps_direct_writes_out(
    writes: WriteRig, pg_server: PgServer, start_proxy: Callable[..., RunningProxy]
) -> None:
    owner = pg_server.create_role()
    app = pg_server.create_role()
    dbname = conninfo_to_dict(writes.database_url)["dbname"]
    try:
        with writes.direct() as conn:
            for statement in role_setup_sql("stripe", owner.name, app.name):
                conn.execute(statement)  # type: ignore[arg-type]
        kept = _customer(writes, "kept@example.com")
        with psycopg.connect(app.url(dbname), autocommit=True) as conn:
            assert conn.execute("SELECT id FROM stripe.customer").fetchall() == [(kept,)]
            for sql in (
                "INSERT INTO stripe.customer (id, _raw, _stripe_time) VALUES ('x', '{}', now())",
                "UPDATE stripe.customer SET name = 'x'",
                "DELETE FROM stripe.customer",
                "TRUNCATE stripe.customer",
                "UPDATE stripe._collection_state SET state = 'done'",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(sql)
            # inside a transaction the statement runs; COMMIT is refused
            with (
                pytest.raises(psycopg.errors.InsufficientPrivilege, match="only through"),
                conn.transaction(),
            ):
                assert conn.execute("DELETE FROM stripe.customer").rowcount == 1
        assert writes.rows("SELECT id, name FROM stripe.customer") == [(kept, None)]
        # through a proxy whose store connections log in as the owner role
        store = owner.url(dbname)
        with (
            handler_proxy(start_proxy, writes.database_url, writes.api, store) as (proxy, _),
            psycopg.connect(proxy.url(app.url(dbname)), autocommit=True) as conn,
        ):
            row = conn.execute(
                "INSERT INTO stripe.customer (email) VALUES ('app@example.com') RETURNING id"
            ).fetchone()
            assert row is not None
            assert conn.execute(
                "SELECT email FROM stripe.customer ORDER BY email"
            ).fetchall() == [("app@example.com",), ("kept@example.com",)]
        assert writes.stripe.v1.customers.retrieve(row[0]).email == "app@example.com"
    finally:
        with writes.direct() as conn:
            for role in (app.name, owner.name):
                conn.execute(f'DROP OWNED BY "{role}"')  # type: ignore[arg-type]
        pg_server.drop_role(owner.name)
        pg_server.drop_role(app.name)


def test_postgresql_errors_while_evaluating_are_postgresqls_own(writes: WriteRig) -> None:
    cid = _customer(writes, "eval@example.com")
    with writes.connect(autocommit=False) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("UPDATE stripe.customer SET balance = 1 / 0 WHERE id = %s", [cid])
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        conn.rollback()
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):  # simple protocol
            conn.execute("INSERT INTO stripe.customer (email, balance) VALUES ('x', 'lots')")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        conn.rollback()
    assert len(_stripe_customers(writes)) == 1


def test_more_statement_shapes(writes: WriteRig) -> None:
    a = _customer(writes, "a@example.com")
    b = _customer(writes, "b@example.com")
    with writes.connect() as conn:
        conn.execute("CREATE TEMP TABLE renames (email text, name text)")
        conn.execute("INSERT INTO renames VALUES ('a@example.com', 'A'), ('a@example.com', 'A2')")
        cur = conn.execute(
            "UPDATE stripe.customer c SET name = r.name FROM renames r WHERE r.email = c.email"
        )
        assert cur.statusmessage == "UPDATE 1"  # one row, though two matched
        cur = conn.execute(
            "DELETE FROM stripe.customer c USING renames r WHERE r.email = c.email "
            "AND r.name = 'A' RETURNING c.id, r.name"
        )
        assert (cur.statusmessage, cur.fetchall()) == ("DELETE 1", [(a, "A")])
        cur = conn.execute("INSERT INTO stripe.customer DEFAULT VALUES RETURNING email")
        assert (cur.statusmessage, cur.fetchall()) == ("INSERT 0 1", [(None,)])
        cur = conn.execute(
            "WITH n AS (SELECT 'w' || g || '@example.com' AS e FROM generate_series(1, 3) g) "
            "INSERT INTO stripe.customer (email) SELECT e FROM n ORDER BY e RETURNING *"
        )
        assert cur.statusmessage == "INSERT 0 3" and cur.description is not None
        names = [d.name for d in cur.description]
        assert names[:2] == ["id", "address"] and "_raw" in names
        assert [row[names.index("email")] for row in cur.fetchall()] == [
            "w1@example.com", "w2@example.com", "w3@example.com"
        ]  # fmt: skip
    assert writes.rows("SELECT count(*) FROM stripe.customer WHERE id <> %s", [b]) == [(4,)]


def test_executemany(writes: WriteRig) -> None:
    with writes.connect() as conn:
        cur = conn.cursor()
        cur.executemany(
            "INSERT INTO stripe.customer (email, balance) VALUES (%s, %s)",
            [(f"many{n}@example.com", n) for n in range(5)],
        )
        assert cur.rowcount == 5
        cur.executemany(
            "UPDATE stripe.customer SET balance = balance * %s WHERE email = %s",
            [(10, f"many{n}@example.com") for n in range(5)],
        )
    assert sorted(writes.rows("SELECT email, balance FROM stripe.customer")) == [
        (f"many{n}@example.com", n * 10) for n in range(5)
    ]
    assert sorted(c.balance for c in _stripe_customers(writes)) == [0, 10, 20, 30, 40]


def test_a_schema_with_only_some_collections_stores_deletes_and_creates(
    writes: WriteRig, start_proxy: Callable[..., RunningProxy]
) -> None:
    """A run that syncs only customers has no tables for a customer's children (sources,
    tax ids, …): a delete through the proxy still removes the row at once."""
    import asyncio

    from stripesync.catalog import build_catalog
    from stripesync.schema.migrate import migrate

    async def only_customers() -> None:
        async with await psycopg.AsyncConnection.connect(
            writes.database_url, autocommit=True
        ) as conn:
            await conn.execute("DROP SCHEMA IF EXISTS only_customers CASCADE")
            await migrate(conn, "only_customers", build_catalog().select(["customer"]))

    asyncio.run(only_customers())
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(writes.database_url, open=False)
    handler = StripeWriteHandler(writes.api, pool, schema="only_customers")
    proxy = start_proxy(writes.database_url, write_handler=handler)
    proxy.call(pool.open(wait=True))
    try:
        with psycopg.connect(proxy.url(writes.database_url), autocommit=True) as conn:
            notices: list[str] = []
            conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
            row = conn.execute(
                "INSERT INTO only_customers.customer (email) VALUES ('few@example.com') "
                "RETURNING id"
            ).fetchone()
            assert row is not None
            cur = conn.execute("DELETE FROM only_customers.customer WHERE id = %s", [row[0]])
            assert cur.rowcount == 1
            assert notices == []  # stored at once: no "could not store" warning
        assert writes.rows("SELECT count(*) FROM only_customers.customer") == [(0,)]
        assert writes.rows("SELECT collection, id FROM only_customers._deletions") == [
            ("customer", row[0])
        ]
    finally:
        proxy.call(pool.close())
        with writes.direct() as conn:
            conn.execute("DROP SCHEMA only_customers CASCADE")
