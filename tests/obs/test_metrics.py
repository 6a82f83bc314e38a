"""The metrics: names, endpoint templates, and the instrumented layers reporting into them."""

import re

import prometheus_client
import psycopg
import pytest

from stripesync.catalog import build_catalog, load_spec
from stripesync.obs import metrics
from stripesync.obs.metrics import REGISTRY, endpoint_template
from stripesync.obs.stripe_paths import LITERAL_SEGMENTS
from stripesync.schema.migrate import migrate
from stripesync.store import Incoming, Store
from stripesync.stripe_api.client import StripeApi, StripeApiError
from stripesync.stripe_api.ratelimit import RateLimiter

CAT = build_catalog()


def value(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _catalog_paths():
    for c in CAT:
        for p in (c.read.path, c.read.retrieve):
            if p:
                yield p
        for op in (c.writes.create, c.writes.update, c.writes.delete):
            if op:
                yield op.path


def test_every_metric_of_the_brief_is_registered_privately():
    names = {m.name for m in REGISTRY.collect()}
    expected = {
        "stripesync_events_lag_seconds",
        "stripesync_events_applied",
        "stripesync_backfill_objects",
        "stripesync_backfill_done",
        "stripesync_stripe_requests",
        "stripesync_stripe_rate_limited",
        "stripesync_ratelimit_wait_seconds",
        "stripesync_proxy_writes",
        "stripesync_proxy_write_seconds",
        "stripesync_store_batch_rows",
        "stripesync_store_batch_seconds",
        "stripesync_webhooks",
    }
    assert expected <= names
    # not in prometheus_client's global registry: importing stripesync adds nothing there
    default = {m.name for m in prometheus_client.REGISTRY.collect()}
    assert not {n for n in default if n.startswith("stripesync")}


def test_webhook_outcomes_are_exposed_before_they_happen():
    text = prometheus_client.generate_latest(REGISTRY).decode()
    for outcome in ("accepted", "forged", "stale", "replayed", "malformed"):
        assert f'stripesync_webhooks_total{{outcome="{outcome}"}}' in text


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/v1/customers/cus_123/tax_ids", "/v1/customers/{id}/tax_ids"),
        ("/v1/customers/cus_N1x2Y3z4/tax_ids/txi_9", "/v1/customers/{id}/tax_ids/{id}"),
        ("/v1/customers", "/v1/customers"),
        ("/v1/customers/search", "/v1/customers/search"),
        ("/v1/events?ending_before=evt_1", "/v1/events"),
        ("/v1/balance", "/v1/balance"),
        ("/v1/checkout/sessions/cs_test_a1/line_items", "/v1/checkout/sessions/{id}/line_items"),
        ("/v1/billing_portal/configurations/bpc_1", "/v1/billing_portal/configurations/{id}"),
        ("/v1/payment_intents/pi_1/confirm", "/v1/payment_intents/{id}/confirm"),
        # custom ids and capability names are ids too, whatever they look like
        ("/v1/coupons/summer", "/v1/coupons/{id}"),
        ("/v1/plans/gold-monthly", "/v1/plans/{id}"),
        ("/v1/accounts/acct_1/capabilities/card_payments", "/v1/accounts/{id}/capabilities/{id}"),
        ("/v1/products/prod%20x", "/v1/products/{id}"),
        # legacy endpoints the catalog still reads
        ("/v1/invoices/upcoming", "/v1/invoices/upcoming"),
        ("/v1/3d_secure/tdsrc_1", "/v1/3d_secure/{id}"),
        ("/v1/subscription_items/si_1/usage_records", "/v1/subscription_items/{id}/usage_records"),
    ],
)
def test_endpoint_template(path, template):
    assert endpoint_template(path) == template


def test_every_endpoint_of_the_sdk_and_the_catalog_maps_to_its_template():
    paths = {op.path for op in load_spec().operations} | set(_catalog_paths())
    missing = set()
    for p in paths:
        for seg in p.split("/")[2:]:
            if seg and not seg.startswith("{") and seg not in LITERAL_SEGMENTS:
                missing.add(seg)
    assert not missing, f"add to stripesync/obs/stripe_paths.py: {sorted(missing)}"
    for p in paths:
        concrete = re.sub(r"\{[a-z_]+\}", "xyz_Ab12", p)
        assert endpoint_template(concrete) == re.sub(r"\{[a-z_]+\}", "{id}", p), p


def test_proxy_writes_are_counted_by_outcome():
    before = value("stripesync_proxy_writes_total", collection="customer", outcome="refused")
    hist = value("stripesync_proxy_write_seconds_count", outcome="refused")
    metrics.record_proxy_write("customer", "refused", 0.2)
    assert value("stripesync_proxy_writes_total", collection="customer", outcome="refused") == (
        before + 1
    )
    assert value("stripesync_proxy_write_seconds_count", outcome="refused") == hist + 1
    with pytest.raises(ValueError):
        metrics.record_proxy_write("customer", "maybe", 0.1)


async def test_rate_limiter_reports_its_wait():
    limiter = RateLimiter(1000)
    before = value("stripesync_ratelimit_wait_seconds_total")
    limiter.penalize(0.1)
    await limiter.acquire()
    waited = value("stripesync_ratelimit_wait_seconds_total") - before
    assert 0.09 <= waited < 1.0
    assert waited == pytest.approx(limiter.waited_seconds)


async def test_client_counts_requests_by_endpoint_template_and_status(emulator):
    customer = emulator.stripe().v1.customers.create({"email": "m@example.com"})

    def requests(status, endpoint="/v1/customers/{id}", method="GET"):
        return value(
            "stripesync_stripe_requests_total", method=method, endpoint=endpoint, status=status
        )

    ok, missing, limited = requests("200"), requests("404"), requests("429")
    rate_limited = value("stripesync_stripe_rate_limited_total")
    async with StripeApi(
        "sk_test_emulator", api_base=emulator.url, max_rps=500, max_retries=0
    ) as api:
        await api.get(f"/v1/customers/{customer.id}")
        await api.get(f"/v1/customers/{customer.id}")
        with pytest.raises(StripeApiError):
            await api.get("/v1/customers/cus_missing")
        emulator.controls.fault("429", "/v1/customers/{id}", method="GET", nth=1)
        with pytest.raises(StripeApiError) as err:
            await api.get(f"/v1/customers/{customer.id}")
        assert err.value.status == 429
        assert api.stats.requests[("/v1/customers/{id}", 200)] == 2
    assert requests("200") == ok + 2
    assert requests("404") == missing + 1
    assert requests("429") == limited + 1
    assert value("stripesync_stripe_rate_limited_total") == rate_limited + 1
    # no label ever carries an id
    text = prometheus_client.generate_latest(REGISTRY).decode()
    assert customer.id not in text and "cus_missing" not in text


async def test_store_reports_batch_sizes_and_latency(database_url):
    rows_count = value("stripesync_store_batch_rows_count")
    rows_sum = value("stripesync_store_batch_rows_sum")
    seconds_count = value("stripesync_store_batch_seconds_count")
    seconds_sum = value("stripesync_store_batch_seconds_sum")
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await migrate(conn, "stripe", [CAT["customer"]])
        store = Store("stripe")
        items = [
            Incoming({"id": f"cus_{i}", "object": "customer", "created": 1}, stripe_time=1.0)
            for i in range(7)
        ]
        await store.upsert(conn, CAT["customer"], items)
        await store.upsert(conn, CAT["customer"], items[:3])
        await conn.commit()
    assert value("stripesync_store_batch_rows_count") == rows_count + 2
    assert value("stripesync_store_batch_rows_sum") == rows_sum + 10
    assert value("stripesync_store_batch_seconds_count") == seconds_count + 2
    added = value("stripesync_store_batch_seconds_sum") - seconds_sum
    assert added == pytest.approx(store.seconds)
    assert value("stripesync_store_batch_rows_bucket", le="5.0") >= 1  # the batch of 3
