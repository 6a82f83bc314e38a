"""The process's metrics, in a registry of their own, served by `GET /metrics`.

Every layer may import this module and report into it; it imports no other layer. The
metrics live in `REGISTRY`, not in prometheus_client's global default registry, so that
importing stripesync never adds series to an embedding application's registry (and
tests can read exact values with `REGISTRY.get_sample_value`).

Label values are bounded: Stripe requests are labelled by endpoint template
(`endpoint_template`), never by their path with ids; collections and event types come
from the catalog; outcomes are fixed words. Nothing here ever carries a key or a secret.

The metrics are process-wide: two accounts synced by one process add into the same
series.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stripesync.obs.stripe_paths import LITERAL_SEGMENTS, VERSIONS

REGISTRY = CollectorRegistry(auto_describe=True)

# ---- live sync ---------------------------------------------------------------------------

EVENTS_LAG = Gauge(
    "stripesync_events_lag_seconds",
    "How far behind Stripe the live copy may be: seconds since the Stripe-side time up to "
    "which every event is known to be applied",
    registry=REGISTRY,
)
EVENTS_APPLIED = Counter(
    "stripesync_events_applied_total",
    "Events applied to the database by the live sync, by event type",
    ["type"],
    registry=REGISTRY,
)

# ---- backfill ------------------------------------------------------------------------------

BACKFILL_OBJECTS = Counter(
    "stripesync_backfill_objects_total",
    "Objects written by the backfill in this process, by collection",
    ["collection"],
    registry=REGISTRY,
)
BACKFILL_DONE = Gauge(
    "stripesync_backfill_done",
    "1 when the collection's backfill is complete (or skipped), 0 while it is not",
    ["collection"],
    registry=REGISTRY,
)

# ---- Stripe API --------------------------------------------------------------------------

STRIPE_REQUESTS = Counter(
    "stripesync_stripe_requests_total",
    "Requests made to the Stripe API (every attempt, retries included), by method, "
    "endpoint template and HTTP status (0: Stripe could not be reached)",
    ["method", "endpoint", "status"],
    registry=REGISTRY,
)
STRIPE_RATE_LIMITED = Counter(
    "stripesync_stripe_rate_limited_total",
    "Responses 429 (rate limited) received from Stripe",
    registry=REGISTRY,
)
STRIPE_CLOCK_OFFSET = Gauge(
    "stripesync_stripe_clock_offset_seconds",
    "Stripe's clock minus this machine's, read from the Date of Stripe's responses "
    "(copies are dated by Stripe's clock)",
    registry=REGISTRY,
)
RATELIMIT_WAIT = Counter(
    "stripesync_ratelimit_wait_seconds_total",
    "Time spent waiting on the client-side rate limiter, summed over every request",
    registry=REGISTRY,
)

# ---- proxy ---------------------------------------------------------------------------------

PROXY_OUTCOMES = ("accepted", "refused")
PROXY_WRITES = Counter(
    "stripesync_proxy_writes_total",
    "Writes through the proxy to synced tables, by collection and outcome "
    "(accepted: Stripe made the change; refused: by the proxy or by Stripe)",
    ["collection", "outcome"],
    registry=REGISTRY,
)
PROXY_WRITE_SECONDS = Histogram(
    "stripesync_proxy_write_seconds",
    "Latency of a write through the proxy, from the statement to the reply, by outcome",
    ["outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)

# ---- store ---------------------------------------------------------------------------------

STORE_BATCH_ROWS = Histogram(
    "stripesync_store_batch_rows",
    "Objects per batch written by the store",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
    registry=REGISTRY,
)
STORE_BATCH_SECONDS = Histogram(
    "stripesync_store_batch_seconds",
    "Time to write one batch (COPY into staging, then the upsert)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)

# ---- webhooks ------------------------------------------------------------------------------

WEBHOOK_OUTCOMES = ("accepted", "forged", "stale", "replayed", "malformed")
WEBHOOKS = Counter(
    "stripesync_webhooks_total",
    "Webhook deliveries received, by outcome (accepted, forged, stale, replayed, malformed)",
    ["outcome"],
    registry=REGISTRY,
)
for _outcome in WEBHOOK_OUTCOMES:
    WEBHOOKS.labels(_outcome)  # every outcome is exposed, at 0 until it happens
for _outcome in PROXY_OUTCOMES:
    PROXY_WRITE_SECONDS.labels(_outcome)


def endpoint_template(path: str) -> str:
    """A Stripe path as its endpoint template: every segment that is not a literal of
    Stripe's API is an id.

    >>> endpoint_template("/v1/customers/cus_123/tax_ids")
    '/v1/customers/{id}/tax_ids'
    >>> endpoint_template("/v1/coupons/SUMMER-25?expand[]=x")
    '/v1/coupons/{id}'
    """
    segments = path.split("?", 1)[0].split("/")
    out = []
    for i, seg in enumerate(segments):
        literal = not seg or seg in LITERAL_SEGMENTS or (i == 1 and seg in VERSIONS)
        out.append(seg if literal else "{id}")
    return "/".join(out)


def record_stripe_request(method: str, path: str, status: int) -> None:
    """Count one attempt at a Stripe request (status 0: no response)."""
    STRIPE_REQUESTS.labels(method.upper(), endpoint_template(path), str(status)).inc()
    if status == 429:
        STRIPE_RATE_LIMITED.inc()


def record_store_batch(rows: int, seconds: float) -> None:
    STORE_BATCH_ROWS.observe(rows)
    STORE_BATCH_SECONDS.observe(seconds)


ProxyWriteSink = Callable[[str, str, float], None]
_proxy_write_sink: ProxyWriteSink | None = None


def send_proxy_writes_to(sink: ProxyWriteSink | None) -> None:
    """Hand this process's proxy writes to `sink` instead of counting them here (a
    proxy worker hands them to the first process, whose /metrics counts them all)."""
    global _proxy_write_sink
    _proxy_write_sink = sink


def record_proxy_write(collection: str, outcome: str, seconds: float) -> None:
    """One write through the proxy; `outcome` is 'accepted' or 'refused'."""
    if outcome not in PROXY_OUTCOMES:
        raise ValueError(f"unknown proxy write outcome {outcome!r}")
    if _proxy_write_sink is not None:
        _proxy_write_sink(collection, outcome, seconds)
        return
    PROXY_WRITES.labels(collection, outcome).inc()
    PROXY_WRITE_SECONDS.labels(outcome).observe(seconds)
