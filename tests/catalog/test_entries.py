import re
from pathlib import Path

import pytest

from stripesync.catalog import ReadKind, UnknownCollectionError, build_catalog, load_spec

# The published read/write marks of the 56 collections this project re-creates.
SEED = Path(__file__).resolve().parent / "data" / "supported-objects.md"

SEED_NAMES = [
    "account",
    "application",
    "balance_transaction",
    "bank_account",
    "billing_portal.configuration",
    "billing_portal.session",
    "charge",
    "checkout.session",
    "country_spec",
    "credit_note",
    "customer",
    "customer_balance_transaction",
    "dispute",
    "event",
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
    "radar.early_fraud_warning",
    "radar.value_list_item",
    "refund",
    "reporting.report_run",
    "reporting.report_type",
    "reserve_transaction",
    "scheduled_query_run",
    "setup_intent",
    "sku",
    "source",
    "source_mandate_notification",
    "subscription",
    "tax_deducted_at_source",
    "tax_id",
    "tax_rate",
    "terminal.location",
    "three_d_secure",
    "transfer",
    "upcoming_customer_invoice",
    "upcoming_subscription_invoice",
    "usage_record",
    "usage_record_summary",
    "webhook_endpoint",
]


def _seed_marks() -> dict[str, bool]:
    marks = {}
    for line in SEED.read_text().splitlines():
        m = re.match(r"^\| ([a-z_.]+) \| yes \| (yes|—) \|$", line)
        if m:
            marks[m.group(1)] = m.group(2) == "yes"
    return marks


def test_every_seed_collection_has_exactly_one_entry():
    catalog = build_catalog()
    assert sorted(c.name for c in catalog.seed()) == sorted(SEED_NAMES)
    assert len(SEED_NAMES) == 56


def test_seed_write_marks_match_the_published_page():
    marks = _seed_marks()
    assert len(marks) == 56 and sum(marks.values()) == 42
    catalog = build_catalog()
    for name, writable in marks.items():
        assert catalog[name].seed_writable == writable, name


def test_tables_are_named_after_collections():
    catalog = build_catalog()
    assert catalog["checkout.session"].table == "checkout_session"
    assert catalog["issuing.card"].table == "issuing_card"
    assert catalog.by_table("upcoming_customer_invoice").key == "customer_id"
    assert catalog["upcoming_subscription_invoice"].key == "subscription_id"


def test_beyond_the_seed_every_listable_sdk_resource_is_there():
    catalog = build_catalog()
    for name in (
        "subscription_item",
        "subscription_schedule",
        "coupon",
        "payment_intent",
        "payment_method",
        "quote",
        "application_fee",
        "radar.value_list",
    ):
        assert name in catalog, name
        assert not catalog[name].seed
    # every list endpoint's object that needs no unknown parameter is covered
    spec = load_spec()
    covered = {o for c in catalog for o in c.objects}
    for op in spec.operations:
        if (
            op.verb == "GET"
            and op.returns_list
            and "{" not in op.path
            and not op.path.endswith("/search")
        ):
            obj = spec.class_objects.get(op.returns_class or "")
            params = spec.param_fields(op.params) if op.params else {}
            if obj and not any(v.get("required") for v in params.values()):
                assert obj in covered, (op.path, obj)


def test_nested_entries_name_existing_parents_and_real_paths():
    catalog = build_catalog()
    spec = load_spec()
    for c in catalog:
        for read in c.reads:
            if read.parent:
                assert read.parent in catalog, (c.name, read.parent)
            if read.kind in (ReadKind.LIST, ReadKind.NESTED) and read.path:
                op = spec.operation("GET", read.path)
                assert op is not None and op.returns_list, (c.name, read.path)
            if read.kind == ReadKind.NESTED and read.path and "{" in read.path:
                assert "{" + str(read.parent_param) + "}" in read.path


def test_write_endpoints_exist_in_the_sdk_and_match_the_entries():
    catalog = build_catalog()
    spec = load_spec()
    for c in catalog:
        for op in (c.writes.create, c.writes.update, c.writes.delete):
            if op is None or op.params is None:
                continue  # legacy endpoints are hand-declared
            assert spec.operation(op.verb, op.path) is not None, (c.name, op)
    sub = catalog["subscription"]
    assert sub.writes.delete is not None and sub.writes.delete.method == "cancel"
    assert sub.read.params == {"status": "all"}
    assert sub.delete_events == ()  # a canceled subscription keeps its row
    assert "customer.deleted" in catalog["customer"].delete_events
    assert "customer.tax_id.created" in catalog["tax_id"].events
    assert "customer.subscription.updated" in catalog["subscription"].events
    assert catalog["mandate"].writes.any is False  # Stripe offers no write


def test_legacy_collections_carry_the_version_that_serves_them():
    catalog = build_catalog()
    for name in ("order", "order_return", "sku", "three_d_secure", "usage_record_summary"):
        c = catalog[name]
        assert c.sdk_class is None and c.legacy_columns, name
        assert c.read.api_version and c.read.api_version < "2025-03-31", name


def test_select_refuses_unknown_names_and_lists_the_known():
    catalog = build_catalog()
    assert [c.name for c in catalog.select(["customer", "charge"])] == ["customer", "charge"]
    with pytest.raises(UnknownCollectionError, match="custmer"):
        catalog.select(["custmer"])


def test_objects_name_their_parent_and_embed_their_children() -> None:
    from stripesync.catalog.objects import embedded_children, parent_id

    cat = build_catalog()
    assert parent_id(cat["tax_id"], {"id": "txi_1", "customer": "cus_1"}) == "cus_1"
    assert parent_id(cat["fee_refund"], {"id": "fr_1", "fee": {"id": "fee_1"}}) == "fee_1"
    assert parent_id(cat["customer"], {"id": "cus_1"}) is None
    item = {"id": "si_1", "object": "subscription_item"}
    sub = {"items": {"object": "list", "data": [item], "has_more": False}}
    assert embedded_children(sub, cat["subscription_item"]) == [item]
    truncated = {"items": {"object": "list", "data": [item], "has_more": True}}
    assert embedded_children(truncated, cat["subscription_item"]) is None
