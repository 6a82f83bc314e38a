"""One declarative entry per collection.

The 56 collections of the seed are declared here by hand (where they are read from,
quirks and reasons); what the SDK already says (columns, event types, write endpoints
and their parameters) is derived from the SDK spec. Every other listable resource of
the pinned SDK gets an entry derived entirely from the spec (`_derived_entries`).
"""

from __future__ import annotations

import re
from functools import cache

from stripesync.catalog.model import (
    Catalog,
    Collection,
    LegacyColumn,
    Read,
    ReadKind,
    Reference,
    WriteOp,
    Writes,
)
from stripesync.catalog.spec import Spec, load_spec

# Stripe-Versions that still serve the seed's legacy endpoints.
LEGACY_ORDERS_VERSION = "2020-08-27"  # Orders v1, order returns, SKUs, 3D Secure
PRE_BASIL_VERSION = "2024-12-18.acacia"  # usage records, GET /v1/invoices/upcoming

# Event prefixes that do not spell the object's name.
EVENT_PREFIXES: dict[str, tuple[str, ...]] = {
    "subscription": ("customer.subscription",),
    "tax_id": ("customer.tax_id",),
    "dispute": ("charge.dispute",),
    "bank_account": ("customer.source", "account.external_account"),
    "source": ("customer.source", "source", "account.external_account"),
    "fee_refund": ("application_fee.refund",),
    "refund": ("refund", "charge.refund"),
    "discount": ("customer.discount",),
    "application": ("account.application",),
    "scheduled_query_run": ("sigma.scheduled_query_run",),
    "source_mandate_notification": (),
}

# Event types whose prefix misleads: their data.object belongs to this collection.
ELSEWHERE_EVENTS = {
    "source.mandate_notification": "source_mandate_notification",
    "invoice.upcoming": "upcoming_customer_invoice",
}

# Objects Stripe announces through no event, or not reliably: re-listed on a schedule.
RELISTED = {
    "account",
    "person",
    "bank_account",
    "country_spec",
    "reporting.report_type",
    "balance_transaction",
    "balance",
    "application",
    # a pending invoice item's update has had no event since invoiceitem.updated was
    # removed (2023); once on an invoice, the invoice's events announce its changes
    "invoiceitem",
}


def _event_types(spec: Spec) -> list[str]:
    fields = spec.param_fields("WebhookEndpointCreateParams")
    values = fields["enabled_events"]["of"]["values"]
    return [v for v in values if v != "*"]


def _events_for(spec: Spec, obj: str, name: str) -> tuple[str, ...]:
    prefixes = EVENT_PREFIXES.get(name, (obj, obj.replace(".", "_")))
    out: list[str] = []
    for t in _event_types(spec):
        if t in ELSEWHERE_EVENTS and ELSEWHERE_EVENTS[t] != name:
            continue
        for p in prefixes:
            if t.startswith(p + ".") and "." not in t[len(p) + 1 :]:
                out.append(t)
                break
    return tuple(out)


def _op(spec: Spec, verb: str, path: str) -> WriteOp | None:
    o = spec.operation(verb, path)
    if o is None:
        return None
    return WriteOp(verb=o.verb, path=o.path, params=o.params, method=o.method)


def _item_path(spec: Spec, list_path: str, verb: str) -> WriteOp | None:
    """The endpoint of one object under a list path: POST/DELETE {list_path}/{x}."""
    pattern = re.compile(re.escape(list_path) + r"/\{[a-z_]+\}$")
    for o in spec.operations:
        if o.verb == verb and pattern.match(o.path):
            return WriteOp(verb=o.verb, path=o.path, params=o.params, method=o.method)
    return None


def derive_writes(spec: Spec, list_path: str) -> Writes:
    """create = POST on the list path, update = POST on an object, delete = DELETE on it
    (for a subscription that DELETE is the SDK's `cancel`)."""
    return Writes(
        create=_op(spec, "POST", list_path),
        update=_item_path(spec, list_path, "POST"),
        delete=_item_path(spec, list_path, "DELETE"),
    )


def _retrieve(spec: Spec, list_path: str) -> str | None:
    pattern = re.compile(re.escape(list_path) + r"/\{[a-z_]+\}$")
    for o in spec.operations:
        if o.verb == "GET" and pattern.match(o.path) and not o.returns_list:
            return o.path
    return None


def _has_created(spec: Spec, list_path: str) -> bool:
    o = spec.operation("GET", list_path)
    if o is None or o.params is None:
        return False
    return "created" in spec.param_fields(o.params)


def _class_of(spec: Spec, obj: str) -> str:
    return spec.objects[obj]


def _entry(
    spec: Spec,
    name: str,
    path: str,
    *,
    parent: str | None = None,
    parent_param: str | None = None,
    obj: str | None = None,
    params: dict[str, str] | None = None,
    writes: Writes | None = None,
    **kw: object,
) -> Collection:
    """A collection read from a list endpoint: top-level, or a parent's when `parent`."""
    obj = obj or name
    return Collection(
        name=name,
        object=obj,
        read=Read(
            kind=ReadKind.NESTED if parent else ReadKind.LIST,
            path=path,
            parent=parent,
            parent_param=parent_param,
            params=params or {},
            created_filter=_has_created(spec, path),
            retrieve=_retrieve(spec, path),
        ),
        sdk_class=_class_of(spec, obj),
        events=_events_for(spec, obj, name),
        writes=writes if writes is not None else derive_writes(spec, path),
        **kw,  # type: ignore[arg-type]
    )


def _listed(spec: Spec, name: str, path: str, **kw: object) -> Collection:
    return _entry(spec, name, path, **kw)  # type: ignore[arg-type]


def _nested(
    spec: Spec, name: str, path: str, parent: str, parent_param: str, **kw: object
) -> Collection:
    return _entry(spec, name, path, parent=parent, parent_param=parent_param, **kw)  # type: ignore[arg-type]


def _legacy_cols(spec: str) -> tuple[LegacyColumn, ...]:
    out = []
    for part in spec.split():
        n, t = part.split(":")
        out.append(LegacyColumn(n, t))
    return tuple(out)


# Hand-declared columns of the collections the pinned SDK no longer describes, as
# their last API reference versions documented them.
ORDER_COLUMNS = _legacy_cols(
    "id:str object:str amount:int amount_returned:int application:str application_fee:int "
    "charge:ref created:unix currency:str customer:ref email:str external_coupon_code:str "
    "items:json livemode:bool metadata:json returns:json selected_shipping_method:str "
    "shipping:json shipping_methods:json status:str status_transitions:json updated:unix "
    "upstream_id:str"
)
ORDER_RETURN_COLUMNS = _legacy_cols(
    "id:str object:str amount:int created:unix currency:str items:json livemode:bool "
    "order:ref refund:ref"
)
SKU_COLUMNS = _legacy_cols(
    "id:str object:str active:bool attributes:json created:unix currency:str image:str "
    "inventory:json livemode:bool metadata:json package_dimensions:json price:int "
    "product:ref updated:unix"
)
THREE_D_SECURE_COLUMNS = _legacy_cols(
    "id:str object:str amount:int authenticated:bool card:json created:unix currency:str "
    "livemode:bool redirect_url:str status:str"
)
USAGE_RECORD_COLUMNS = _legacy_cols(
    "id:str object:str livemode:bool quantity:int subscription_item:ref timestamp:unix"
)
USAGE_RECORD_SUMMARY_COLUMNS = _legacy_cols(
    "id:str object:str invoice:ref livemode:bool period:json subscription_item:ref total_usage:int"
)


def _seed_entries(spec: Spec) -> list[Collection]:
    s = spec
    seed: list[Collection] = [
        _listed(
            s,
            "account",
            "/v1/accounts",
            extra_reads=(Read(kind=ReadKind.SINGLETON, path="/v1/account"),),
            children=("person", "bank_account", "capability"),
            notes="Connected accounts from GET /v1/accounts, and the platform's own "
            "account from GET /v1/account. Account changes are not reliably announced "
            "by events, so accounts are re-listed on a schedule.",
        ),
        Collection(
            name="application",
            object="application",
            read=Read(
                kind=ReadKind.REFERENCE,
                references=(
                    Reference("charge", "application"),
                    Reference("application_fee", "application"),
                ),
            ),
            sdk_class=_class_of(s, "application"),
            events=_events_for(s, "application", "application"),
            notes="Stripe has no endpoint that lists or retrieves applications: they are "
            "read by expanding the `application` field of charges and application fees.",
        ),
        _listed(
            s,
            "balance_transaction",
            "/v1/balance_transactions",
            notes="No event announces balance transactions: new ones are picked up by "
            "an incremental re-list on `created`.",
        ),
        _nested(
            s,
            "bank_account",
            "/v1/customers/{customer}/sources",
            "customer",
            "customer",
            params={"object": "bank_account"},
            extra_reads=(
                Read(
                    kind=ReadKind.NESTED,
                    path="/v1/accounts/{account}/external_accounts",
                    parent="account",
                    parent_param="account",
                    params={"object": "bank_account"},
                ),
            ),
            notes="Customers' bank accounts (GET /v1/customers/{id}/sources?object="
            "bank_account) and connected accounts' external bank accounts.",
        ),
        _listed(s, "billing_portal.configuration", "/v1/billing_portal/configurations"),
        Collection(
            name="billing_portal.session",
            object="billing_portal.session",
            read=Read(
                kind=ReadKind.EVENTS,
                event_types=("billing_portal.session.created",),
            ),
            sdk_class=_class_of(s, "billing_portal.session"),
            events=("billing_portal.session.created",),
            writes=Writes(create=_op(s, "POST", "/v1/billing_portal/sessions")),
            notes="Stripe offers no list of portal sessions: they come from "
            "billing_portal.session.created events and from writes through the proxy.",
        ),
        _listed(s, "charge", "/v1/charges"),
        _listed(
            s,
            "checkout.session",
            "/v1/checkout/sessions",
            children=("item",),
        ),
        _listed(
            s,
            "country_spec",
            "/v1/country_specs",
            notes="Reference data with no events: re-listed on a schedule.",
        ),
        _listed(s, "credit_note", "/v1/credit_notes"),
        _listed(
            s,
            "customer",
            "/v1/customers",
            children=("tax_id", "customer_balance_transaction", "bank_account", "source"),
            notes="A deleted customer retrieves as {id, object, deleted: true}; its row "
            "goes and a tombstone records the deletion.",
        ),
        _nested(
            s,
            "customer_balance_transaction",
            "/v1/customers/{customer}/balance_transactions",
            "customer",
            "customer",
        ),
        _listed(s, "dispute", "/v1/disputes"),
        _listed(s, "event", "/v1/events", writes=Writes()),
        _nested(
            s,
            "fee_refund",
            "/v1/application_fees/{id}/refunds",
            "application_fee",
            "id",
            writes=Writes(
                create=_op(s, "POST", "/v1/application_fees/{id}/refunds"),
                update=_op(s, "POST", "/v1/application_fees/{fee}/refunds/{id}"),
            ),
        ),
        _listed(s, "file_link", "/v1/file_links"),
        _listed(
            s,
            "invoice",
            "/v1/invoices",
            children=("line_item",),
            notes="A voided or uncollectible invoice keeps its row with that status; "
            "only a deleted draft goes.",
        ),
        _listed(
            s,
            "invoiceitem",
            "/v1/invoiceitems",
            notes="Stripe sends no event when a pending invoice item changes "
            "(invoiceitem.updated was removed in 2023): re-listed on a schedule. Invoice "
            "events fetch the items on their lines.",
        ),
        _listed(s, "issuing.card", "/v1/issuing/cards"),
        _listed(s, "issuing.cardholder", "/v1/issuing/cardholders"),
        _listed(s, "issuing.dispute", "/v1/issuing/disputes"),
        _listed(s, "issuing.transaction", "/v1/issuing/transactions"),
        _nested(
            s,
            "item",
            "/v1/checkout/sessions/{session}/line_items",
            "checkout.session",
            "session",
            writes=Writes(),
            notes="Checkout Session line items; Stripe lets no one write them after the "
            "session is created.",
        ),
        _nested(
            s,
            "line_item",
            "/v1/invoices/{invoice}/lines",
            "invoice",
            "invoice",
            writes=Writes(update=_op(s, "POST", "/v1/invoices/{invoice}/lines/{line_item_id}")),
            notes="Invoice lines; kept current through invoice events (an invoice's "
            "embedded `lines` may be truncated: then they are re-listed).",
        ),
        Collection(
            name="mandate",
            object="mandate",
            read=Read(
                kind=ReadKind.REFERENCE,
                retrieve="/v1/mandates/{id}",
                references=(
                    Reference("setup_intent", "mandate"),
                    Reference("setup_intent", "single_use_mandate"),
                    Reference("payment_intent", "latest_charge.payment_method_details.mandate"),
                    Reference("charge", "payment_method_details.card.mandate"),
                ),
            ),
            sdk_class=_class_of(s, "mandate"),
            events=_events_for(s, "mandate", "mandate"),
            notes="No list endpoint: mandates are retrieved by the ids other objects "
            "reference. Stripe offers no write.",
        ),
        Collection(
            name="order",
            object="order",
            read=Read(kind=ReadKind.LEGACY, path="/v1/orders", api_version=LEGACY_ORDERS_VERSION),
            sdk_class=None,
            events=("order.created", "order.updated", "order.payment_succeeded"),
            writes=Writes(
                create=WriteOp("POST", "/v1/orders", None, "create"),
                update=WriteOp("POST", "/v1/orders/{id}", None, "update"),
            ),
            legacy_columns=ORDER_COLUMNS,
            notes="Orders v1, removed from the API with 2022-08-01; read with "
            f"Stripe-Version {LEGACY_ORDERS_VERSION} from accounts that still have them.",
        ),
        Collection(
            name="order_return",
            object="order_return",
            read=Read(
                kind=ReadKind.LEGACY,
                path="/v1/order_returns",
                api_version=LEGACY_ORDERS_VERSION,
            ),
            sdk_class=None,
            events=("order_return.created",),
            writes=Writes(create=WriteOp("POST", "/v1/orders/{order}/returns", None, "create")),
            legacy_columns=ORDER_RETURN_COLUMNS,
            notes="Returns of Orders v1 (legacy).",
        ),
        _listed(s, "payout", "/v1/payouts"),
        _nested(
            s,
            "person",
            "/v1/accounts/{account}/persons",
            "account",
            "account",
            notes="Persons of connected accounts; events miss some changes, so they are "
            "re-listed on a schedule.",
        ),
        _listed(s, "plan", "/v1/plans"),
        _listed(s, "price", "/v1/prices"),
        _listed(s, "product", "/v1/products"),
        _listed(s, "promotion_code", "/v1/promotion_codes"),
        _listed(s, "radar.early_fraud_warning", "/v1/radar/early_fraud_warnings"),
        _nested(
            s,
            "radar.value_list_item",
            "/v1/radar/value_list_items",
            "radar.value_list",
            "value_list",
            notes="Listed per value list (GET /v1/radar/value_list_items?value_list=...).",
        ),
        _listed(s, "refund", "/v1/refunds"),
        _listed(s, "reporting.report_run", "/v1/reporting/report_runs"),
        _listed(s, "reporting.report_type", "/v1/reporting/report_types"),
        Collection(
            name="reserve_transaction",
            object="reserve_transaction",
            read=Read(
                kind=ReadKind.REFERENCE,
                references=(Reference("balance_transaction", "source"),),
            ),
            sdk_class=_class_of(s, "reserve_transaction"),
            notes="Only reachable as the expanded `source` of a balance transaction; "
            "Stripe offers no write.",
        ),
        _listed(s, "scheduled_query_run", "/v1/sigma/scheduled_query_runs"),
        _listed(s, "setup_intent", "/v1/setup_intents"),
        Collection(
            name="sku",
            object="sku",
            read=Read(kind=ReadKind.LEGACY, path="/v1/skus", api_version=LEGACY_ORDERS_VERSION),
            sdk_class=None,
            events=("sku.created", "sku.updated", "sku.deleted"),
            delete_events=("sku.deleted",),
            writes=Writes(
                create=WriteOp("POST", "/v1/skus", None, "create"),
                update=WriteOp("POST", "/v1/skus/{id}", None, "update"),
                delete=WriteOp("DELETE", "/v1/skus/{id}", None, "delete"),
            ),
            legacy_columns=SKU_COLUMNS,
            notes="SKUs of Orders v1 (legacy).",
        ),
        _nested(
            s,
            "source",
            "/v1/customers/{customer}/sources",
            "customer",
            "customer",
            also_objects=("card",),
            writes=Writes(
                create=_op(s, "POST", "/v1/customers/{customer}/sources"),
                update=_op(s, "POST", "/v1/customers/{customer}/sources/{id}"),
                delete=WriteOp(
                    "DELETE",
                    "/v1/customers/{customer}/sources/{id}",
                    "CustomerPaymentSourceDeleteParams",
                    "delete",
                ),
            ),
            extra_reads=(
                Read(
                    kind=ReadKind.NESTED,
                    path="/v1/accounts/{account}/external_accounts",
                    parent="account",
                    parent_param="account",
                    params={"object": "card"},
                ),
            ),
            notes="Customers' payment sources: Sources and legacy cards (object `card`); "
            "bank accounts go to bank_account. Connected accounts' external cards too.",
        ),
        Collection(
            name="source_mandate_notification",
            object="source_mandate_notification",
            read=Read(kind=ReadKind.EVENTS, event_types=("source.mandate_notification",)),
            sdk_class=_class_of(s, "source_mandate_notification"),
            events=("source.mandate_notification",),
            notes="Only ever delivered in source.mandate_notification events.",
        ),
        _listed(
            s,
            "subscription",
            "/v1/subscriptions",
            params={"status": "all"},
            delete_events=(),
            children=("subscription_item",),
            notes="GET /v1/subscriptions omits canceled subscriptions unless status=all. "
            "A canceled subscription (customer.subscription.deleted) keeps its row with "
            "status canceled; DELETE through the proxy cancels it.",
        ),
        Collection(
            name="tax_deducted_at_source",
            object="tax_deducted_at_source",
            read=Read(
                kind=ReadKind.REFERENCE,
                references=(Reference("balance_transaction", "source"),),
            ),
            sdk_class=_class_of(s, "tax_deducted_at_source"),
            notes="Only reachable as the expanded `source` of a balance transaction.",
        ),
        _nested(
            s,
            "tax_id",
            "/v1/customers/{customer}/tax_ids",
            "customer",
            "customer",
            extra_reads=(Read(kind=ReadKind.LIST, path="/v1/tax_ids"),),
            notes="Customers' tax ids, and the account's own (GET /v1/tax_ids).",
        ),
        _listed(s, "tax_rate", "/v1/tax_rates"),
        _listed(s, "terminal.location", "/v1/terminal/locations"),
        Collection(
            name="three_d_secure",
            object="three_d_secure",
            read=Read(
                kind=ReadKind.LEGACY,
                retrieve="/v1/3d_secure/{id}",
                api_version=LEGACY_ORDERS_VERSION,
            ),
            sdk_class=None,
            writes=Writes(create=WriteOp("POST", "/v1/3d_secure", None, "create")),
            legacy_columns=THREE_D_SECURE_COLUMNS,
            notes="The legacy 3D Secure object (/v1/3d_secure): no list endpoint; rows "
            "come from writes through the proxy and retrieval by id.",
        ),
        _listed(s, "transfer", "/v1/transfers", children=("transfer_reversal",)),
        Collection(
            name="upcoming_customer_invoice",
            object="invoice",
            key="customer_id",
            read=Read(
                kind=ReadKind.UPCOMING,
                path="/v1/invoices/upcoming",
                parent="customer",
                parent_param="customer",
                api_version=PRE_BASIL_VERSION,
            ),
            sdk_class=_class_of(s, "invoice"),
            notes="The invoice Stripe would next bill a customer, across its "
            "subscriptions: GET /v1/invoices/upcoming with a pre-2025-03-31 Stripe-Version. "
            "Refreshed when an event may change it; the row goes when there is none.",
        ),
        Collection(
            name="upcoming_subscription_invoice",
            object="invoice",
            key="subscription_id",
            read=Read(
                kind=ReadKind.UPCOMING,
                path="/v1/invoices/upcoming",
                parent="subscription",
                parent_param="subscription",
                api_version=PRE_BASIL_VERSION,
            ),
            sdk_class=_class_of(s, "invoice"),
            notes="The next invoice of one subscription; falls back to POST "
            "/v1/invoices/create_preview where the upcoming endpoint is refused.",
        ),
        Collection(
            name="usage_record",
            object="usage_record",
            read=Read(kind=ReadKind.WRITE_ONLY, api_version=PRE_BASIL_VERSION),
            sdk_class=None,
            writes=Writes(
                create=WriteOp(
                    "POST",
                    "/v1/subscription_items/{subscription_item}/usage_records",
                    None,
                    "create",
                )
            ),
            legacy_columns=USAGE_RECORD_COLUMNS,
            notes="Legacy metered billing, removed in 2025-03-31.basil. Stripe never "
            "offered a list of usage records: rows come from writes through the proxy; "
            "the summaries are in usage_record_summary.",
        ),
        Collection(
            name="usage_record_summary",
            object="usage_record_summary",
            read=Read(
                kind=ReadKind.LEGACY,
                path="/v1/subscription_items/{subscription_item}/usage_record_summaries",
                parent="subscription_item",
                parent_param="subscription_item",
                api_version=PRE_BASIL_VERSION,
            ),
            sdk_class=None,
            legacy_columns=USAGE_RECORD_SUMMARY_COLUMNS,
            notes="Legacy metered billing (pre-basil), per subscription item.",
        ),
        _listed(
            s,
            "webhook_endpoint",
            "/v1/webhook_endpoints",
            masked=("secret",),
            notes="`secret` signs the endpoint's deliveries; Stripe returns it only when "
            "the endpoint is created. It is a credential: stored as null, never kept in "
            "the tables applications read.",
        ),
    ]
    return [
        _mark_seed(c, writable=name_writable)
        for c, name_writable in ((c, c.name in SEED_WRITABLE) for c in seed)
    ]


SEED_WRITABLE = {
    "account",
    "bank_account",
    "billing_portal.configuration",
    "billing_portal.session",
    "checkout.session",
    "credit_note",
    "customer",
    "customer_balance_transaction",
    "dispute",
    "fee_refund",
    "file_link",
    "invoice",
    "invoiceitem",
    "issuing.card",
    "issuing.cardholder",
    "issuing.dispute",
    "issuing.transaction",
    "item",
    "line_item",
    "mandate",
    "order",
    "order_return",
    "payout",
    "person",
    "plan",
    "price",
    "product",
    "promotion_code",
    "radar.value_list_item",
    "refund",
    "reserve_transaction",
    "setup_intent",
    "sku",
    "source",
    "subscription",
    "tax_id",
    "tax_rate",
    "terminal.location",
    "three_d_secure",
    "transfer",
    "usage_record",
    "webhook_endpoint",
}


def _mark_seed(c: Collection, *, writable: bool) -> Collection:
    from dataclasses import replace

    return replace(c, seed=True, seed_writable=writable, relist=c.name in RELISTED)


# Collections whose end is a status, not a deletion: `*.deleted` events keep the row.
ENDS_IN_STATUS = {"subscription"}


def _with_delete_events(c: Collection) -> Collection:
    """`*.deleted` events remove the row, unless the object's end is a status."""
    from dataclasses import replace

    if c.delete_events or c.name in ENDS_IN_STATUS:
        return c
    return replace(c, delete_events=tuple(e for e in c.events if e.endswith(".deleted")))


# Lists whose required query parameter names a parent collection.
REQUIRED_PARENTS = {
    "subscription": "subscription",
    "setup_intent": "setup_intent",
    "financial_account": "treasury.financial_account",
    "card": "issuing.card",
}
# Objects the seed's entries already cover, or that belong to another collection.
SKIP_DERIVED = {"item", "line_item", "balance"}


def _derived_entries(spec: Spec, known: set[str]) -> list[Collection]:
    """Every other listable resource of the SDK, read as the spec describes it."""
    out: list[Collection] = []
    taken_objects = set(known)
    # top-level lists before nested ones: /v1/payment_methods before
    # /v1/customers/{customer}/payment_methods
    ops = sorted(spec.operations, key=lambda o: ("{" in o.path, o.path))
    for o in ops:
        if o.verb != "GET" or not o.returns_list or o.path.endswith("/search"):
            continue
        cls = o.returns_class
        obj = spec.class_objects.get(cls or "")
        if obj is None or obj in taken_objects or obj in SKIP_DERIVED:
            continue
        params = spec.param_fields(o.params) if o.params else {}
        required = [k for k, v in params.items() if v.get("required")]
        braces = re.findall(r"\{([a-z_]+)\}", o.path)
        if not braces and not required:
            out.append(_listed(spec, obj, o.path, relist=obj in RELISTED))
        elif not braces and len(required) == 1 and required[0] in REQUIRED_PARENTS:
            parent = REQUIRED_PARENTS[required[0]]
            if parent not in known and parent not in taken_objects:
                continue
            out.append(
                _nested(
                    spec,
                    obj,
                    o.path,
                    parent,
                    required[0],
                    writes=derive_writes(spec, o.path),
                )
            )
        elif len(braces) == 1 and not required:
            parent = _parent_of_path(spec, o.path)
            if parent is None:
                continue
            out.append(_nested(spec, obj, o.path, parent, braces[0]))
        else:
            continue
        taken_objects.add(obj)
    # Parents must precede children for a derived nested entry to be valid.
    names = {c.name for c in out} | known
    return [c for c in out if c.read.parent is None or c.read.parent in names]


def _parent_of_path(spec: Spec, path: str) -> str | None:
    """/v1/transfers/{id}/reversals -> the collection listed at /v1/transfers."""
    head = path.split("/{")[0]
    o = spec.operation("GET", head)
    if o is None or not o.returns_list:
        return None
    return spec.class_objects.get(o.returns_class or "")


def _balance(spec: Spec) -> Collection:
    return Collection(
        name="balance",
        object="balance",
        key="object",
        read=Read(kind=ReadKind.SINGLETON, path="/v1/balance"),
        sdk_class=_class_of(spec, "balance"),
        events=("balance.available",),
        relist=True,
        notes="The account's balance: one row (key `object`), refreshed on "
        "balance.available and on a schedule.",
    )


@cache
def build_catalog() -> Catalog:
    spec = load_spec()
    seed = _seed_entries(spec)
    known = {c.name for c in seed} | {o for c in seed for o in c.objects}
    derived = _derived_entries(spec, known)
    # A derived parent (application_fee, subscription_item, radar.value_list) must exist
    # for the seed's nested entries that hang below it.
    return Catalog([_with_delete_events(c) for c in (*seed, *derived, _balance(spec))])


@cache
def embedded_field(child_name: str) -> str | None:
    """The field of a child's parent object that embeds the child's list: the parent's
    list of the child's class (a subscription's `items`, a value list's `list_items`),
    else the last segment of the child's list path (an invoice's `lines`)."""
    catalog = build_catalog()
    child = catalog[child_name]
    if not child.read.parent or not child.read.path or child.read.parent not in catalog:
        return None
    parent = catalog[child.read.parent]
    if parent.sdk_class and child.sdk_class:
        for name, d in load_spec().fields(parent.sdk_class).items():
            if d.get("t") == "listobject" and d.get("of", {}).get("name") == child.sdk_class:
                return name
    return child.read.path.rstrip("/").rsplit("/", 1)[-1]
