"""The write path's pure parts: statement analysis, columns to parameters, SQLSTATEs."""

from __future__ import annotations

from typing import Any

import pytest

from stripesync.catalog import build_catalog
from stripesync.proxy.analyze import Target, analyze, refusal_reason
from stripesync.proxy.evaluate import evaluation, returning_query
from stripesync.proxy.params import Verb, shape_for
from stripesync.proxy.refusals import Refusal, stripe_refusal, stripe_sqlstate
from stripesync.proxy.roles import role_setup_sql
from stripesync.proxy.writes import StripeWriteHandler
from stripesync.stripe_api.client import StripeApi, StripeApiError

CATALOG = build_catalog()
TABLES = frozenset(c.table for c in CATALOG)


def _analysis(sql: str) -> Any:
    a = analyze(sql, TABLES, "stripe")
    assert a is not None
    return a


def _handler() -> StripeWriteHandler:
    return StripeWriteHandler(StripeApi("sk_test_x"), None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sql", "claimed"),
    [
        ("SELECT * FROM stripe.customer", False),
        ("SELECT * FROM stripe.customer FOR UPDATE", False),
        ("INSERT INTO public.notes SELECT id FROM stripe.customer", False),
        ("UPDATE other.customer SET x = 1", False),
        ("EXPLAIN INSERT INTO stripe.customer (email) VALUES ('x')", False),
        ("INSERT INTO stripe.customer (email) VALUES ('x')", True),
        ("insert into customer (email) values ('x')", True),  # resolved by search_path
        ('UPDATE "stripe"."price" SET active = false', True),
        ("DELETE FROM stripe.checkout_session WHERE true", True),
        ("WITH x AS (DELETE FROM stripe.customer RETURNING id) SELECT * FROM x", True),
        ("MERGE INTO stripe.customer c USING t ON true WHEN MATCHED THEN DELETE", True),
        ("TRUNCATE stripe.invoice", True),
        ("COPY stripe.customer FROM STDIN", True),
        ("COPY stripe.customer TO STDOUT", False),
        ("DO $$BEGIN UPDATE stripe.customer SET name = 'x'; END$$", True),
        ("PREPARE p AS DELETE FROM stripe.customer", True),
        ("INSERT INTO stripe.customer (email VALUES", False),  # PostgreSQL's syntax error
    ],
)
def test_claims(sql: str, claimed: bool) -> None:
    assert _handler().claims(sql) is claimed


def test_what_is_taken_over_and_what_is_refused() -> None:
    a = _analysis("INSERT INTO stripe.customer (email) VALUES ('x')")
    assert a.write is not None and a.write_target == Target("stripe", "customer", "INSERT")
    assert refusal_reason(a, list(a.targets), "stripe") is None

    a = _analysis("UPDATE customer SET name = 'x'")
    assert a.unqualified == ("customer",)

    cases = {
        "WITH x AS (DELETE FROM stripe.customer RETURNING id) SELECT * FROM x": (
            "a nested DELETE (data-modifying WITH, EXPLAIN or PREPARE) writing to "
            "stripe.customer cannot be analysed"
        ),
        "DELETE FROM stripe.customer; SELECT 1": "must be sent as a statement of its own",
        "TRUNCATE stripe.customer": "TRUNCATE writing to stripe.customer cannot be analysed",
        "WITH x AS (INSERT INTO notes VALUES (1)) UPDATE stripe.customer SET name = 'x'": (
            "data-modifying WITH"
        ),
        "UPDATE stripe.customer SET (name, email) = ('a', 'b')": "SET (a, b) = (...)",
        "UPDATE stripe.customer SET metadata['a'] = '\"b\"'": 'part of column "metadata"',
        "INSERT INTO stripe.customer VALUES ('x')": "name the columns",
        "UPDATE stripe.customer SET name = 'x' WHERE CURRENT OF c": "WHERE CURRENT OF",
        "UPDATE stripe.customer SET name = 'x' RETURNING old.name": "RETURNING old.*",
        "INSERT INTO stripe.customer (email) VALUES ('x') ON CONFLICT ON CONSTRAINT k "
        "DO NOTHING": "ON CONFLICT ON CONSTRAINT",
    }
    for sql, reason in cases.items():
        a = _analysis(sql)
        synced = [t for t in a.targets if t.schema == "stripe"]
        got = refusal_reason(a, synced, "stripe")
        assert got is not None and reason in got, (sql, got)


def test_every_seed_collection_stripe_lets_one_write_is_writable() -> None:
    writable = [c for c in CATALOG.seed() if c.seed_writable]
    assert len(writable) == 42
    offered = {c.name for c in writable if c.writes.any}
    # the seed marks these writable, but Stripe's API offers no write for them
    assert {c.name for c in writable} - offered == {"item", "mandate", "reserve_transaction"}
    for c in CATALOG:
        shape = shape_for(c)
        for verb in Verb:
            op = getattr(c.writes, verb.value)
            if op is None:
                with pytest.raises(Refusal) as info:
                    shape.op(verb)
                assert info.value.sqlstate == "42809"
            elif c.name in offered:
                assert shape.op(verb).op == op, (c.name, verb)


def test_columns_map_to_the_sdk_parameters() -> None:
    customer = shape_for(CATALOG["customer"])
    create = customer.op(Verb.CREATE)
    assert {"email", "metadata", "address", "balance", "test_clock_id"} <= set(create.writable())
    assert create.params["test_clock_id"].field == "test_clock"
    assert not {"id", "created", "livemode", "_raw"} & set(create.writable())
    assert "default_source_id" in customer.op(Verb.UPDATE).writable()
    assert "test_clock_id" not in customer.op(Verb.UPDATE).writable()

    params, path = customer.create_params(
        {"email": "a@b.c", "metadata": {"k": "v", "n": None}, "test_clock_id": "clock_1",
         "address": None},
        with_key=False,
    )  # fmt: skip
    assert (params, path) == (
        {"email": "a@b.c", "metadata": {"k": "v"}, "test_clock": "clock_1"}, {}
    )  # fmt: skip
    # update: jsonb as its difference from the current value, NULL as Stripe's unset
    assert customer.update_params(
        {"metadata": {"a": "1", "b": "2"}, "address": {"city": "Oslo", "line1": None},
         "description": None, "balance": 5},
        {"metadata": {"a": "1", "gone": "x"}, "address": {"city": "Rome", "line1": "Via 1"},
         "description": "d", "balance": 0},
    ) == {
        "metadata": {"b": "2", "gone": ""},
        "address": {"city": "Oslo", "line1": ""},
        "description": "",
        "balance": 5,
    }  # fmt: skip
    with pytest.raises(Refusal, match=r'"balance" .* cannot be set to NULL'):
        customer.update_params({"balance": None}, {"balance": 3})
    sub = shape_for(CATALOG["subscription"])
    assert sub.op(Verb.DELETE).op.method == "cancel"
    assert sub.path_for(Verb.DELETE, "sub_1", {}) == "/v1/subscriptions/sub_1"
    # timestamps go as Unix seconds
    quote = shape_for(CATALOG["quote"])
    params, _ = quote.create_params(
        {"customer_id": "cus_1", "expires_at": 1700000000.75}, with_key=False
    )
    assert params == {"customer": "cus_1", "expires_at": 1700000000}


def test_paths_of_nested_collections() -> None:
    fee_refund = shape_for(CATALOG["fee_refund"])
    _, path = fee_refund.create_params({"fee_id": "fee_1", "amount": 5}, with_key=False)
    assert fee_refund.path_for(Verb.CREATE, None, path) == "/v1/application_fees/fee_1/refunds"
    assert fee_refund.path_for(Verb.UPDATE, "fr_1", {"fee": "fee_1"}) == (
        "/v1/application_fees/fee_1/refunds/fr_1"
    )
    tax_id = shape_for(CATALOG["tax_id"])
    with pytest.raises(Refusal, match='column "customer_id" is required') as info:
        tax_id.create_params({"type": "eu_vat", "value": "x"}, with_key=False)
    assert info.value.sqlstate == "23502"
    line = shape_for(CATALOG["line_item"])
    assert [(p.brace, p.column, p.parent_fallback) for p in line.op(Verb.UPDATE).path] == [
        ("invoice", "invoice", True)
    ]


def test_evaluation_queries_keep_the_clients_expressions() -> None:
    customer = shape_for(CATALOG["customer"])
    a = _analysis(
        "UPDATE stripe.customer AS c SET email = lower($1), created_note = 1 WHERE c.id = $2"
    )
    with pytest.raises(KeyError):  # an unknown column never reaches evaluation
        evaluation(a.write, customer)
    a = _analysis(
        "UPDATE stripe.customer AS c SET email = lower($1), metadata = c.metadata || $3 "
        "FROM t WHERE c.id = $2 AND t.x = c.email"
    )
    ev = evaluation(a.write, customer)
    assert ev.slots == ["key", "v:email", "v:metadata", "idem", "params"]
    assert ev.sets == ["email", "metadata"] and ev.key == "key"
    # the client's own statement, its RETURNING replaced by the proxy's
    assert ev.sql.startswith(
        'UPDATE stripe.customer AS c SET email = lower($1), metadata = c.metadata || $3 '
        "FROM t WHERE c.id = $2 AND t.x = c.email RETURNING "
        'pg_catalog.to_jsonb("c"."id"), pg_catalog.to_jsonb("c"."email"), '
        'pg_catalog.to_jsonb("c"."metadata"), '
    )
    a = _analysis(
        "INSERT INTO stripe.customer (email, created) VALUES ($1, DEFAULT), ('b', now()) "
        "RETURNING id, email"
    )
    ev = evaluation(a.write, customer)
    assert ev.given == ["email", "created"] and ev.slots[:2] == ["v:email", "v:created"]
    assert ev.sql.startswith(
        "INSERT INTO stripe.customer (email, created) VALUES ($1, DEFAULT), ('b', now()) "
        'RETURNING pg_catalog.to_jsonb("customer"."email"), '
        'pg_catalog.to_jsonb(extract(epoch FROM "customer"."created")), '
    )
    assert returning_query(a.write, customer, 2) == (
        'SELECT id, email FROM "stripe"."customer" WHERE "customer"."id" = ANY(CAST($2 AS '
        'text[])) ORDER BY array_position(CAST($2 AS text[]), "customer"."id")'
    )


@pytest.mark.parametrize(
    ("status", "kind", "code", "param", "sqlstate"),
    [
        (400, "invalid_request_error", "parameter_unknown", "foo", "22023"),
        (400, "invalid_request_error", "parameter_missing", "items", "23502"),
        (400, "invalid_request_error", None, "tax_exempt", "22023"),
        (400, "invalid_request_error", "email_invalid", "email", "22023"),
        (400, "invalid_request_error", "resource_already_exists", "id", "23505"),
        (400, "invalid_request_error", "resource_missing", "items[0][price]", "23503"),
        (404, "invalid_request_error", "resource_missing", "id", "P0002"),
        (404, "invalid_request_error", None, None, "0A000"),
        (400, "invalid_request_error", "invoice_not_editable", None, "23514"),
        (402, "card_error", "card_declined", None, "P0001"),
        (401, "authentication_error", None, None, "28000"),
        (403, "invalid_request_error", None, None, "42501"),
        (409, "idempotency_error", None, None, "40001"),
        (429, "rate_limit_error", "rate_limit", None, "53400"),
        (500, "api_error", None, None, "58000"),
        (0, None, None, None, "58000"),
    ],
)
def test_stripe_errors_map_to_sqlstates(
    status: int, kind: str | None, code: str | None, param: str | None, sqlstate: str
) -> None:
    err = StripeApiError(status, "m", type=kind, code=code, param=param)
    assert stripe_sqlstate(err) == sqlstate


def test_a_stripe_refusal_reads_well() -> None:
    err = StripeApiError(
        400, "Invalid email address: x", type="invalid_request_error", code="email_invalid",
        param="email", request_id="req_1", method="POST", path="/v1/customers",
    )  # fmt: skip
    single = stripe_refusal(err, applied=0, total=1).to_error()
    assert (single.code, single.message) == ("22023", "Invalid email address: x")
    assert single.detail == (
        "Stripe refused POST /v1/customers (type invalid_request_error, code email_invalid, "
        "param email, request id req_1, HTTP 400)."
    )
    assert single.hint is None
    many = stripe_refusal(err, applied=3, total=10, row=4).to_error()
    assert many.detail is not None and many.detail.endswith(
        "3 of 10 rows were applied at Stripe before the failure at row 5; they are stored "
        "in the database."
    )
    assert many.hint == "ROLLBACK cannot undo a change Stripe already made."


def test_role_setup_sql() -> None:
    sql = role_setup_sql("stripe", "sync_owner", "app")
    assert 'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "stripe" TO "app"' in sql
    reader = role_setup_sql("stripe", "sync_owner", "app", writes=False)
    assert 'GRANT SELECT ON ALL TABLES IN SCHEMA "stripe" TO "app"' in reader
    assert not any("INSERT" in statement for statement in reader)
    assert 'REVOKE ALL ON ALL TABLES IN SCHEMA "stripe" FROM "app"' in sql
    assert 'GRANT ALL ON ALL TABLES IN SCHEMA "stripe" TO "sync_owner"' in sql
    with pytest.raises(ValueError, match="must differ"):
        role_setup_sql("stripe", "same", "same")


def test_deeply_nested_statements_are_analysed_without_recursion() -> None:
    deep = "||".join(["'a'"] * 3000)
    assert _handler().claims(f"INSERT INTO stripe.customer (email) SELECT {deep}")
    assert not _handler().claims(f"INSERT INTO notes (x) SELECT {deep}")
