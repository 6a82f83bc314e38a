from stripesync.catalog import build_catalog
from stripesync.schema.columns import Kind, columns_for


def _kinds(name: str) -> dict[str, Kind]:
    return {c.name: c.kind for c in columns_for(name)}


def test_customer_columns_follow_the_sigma_conventions():
    cols = _kinds("customer")
    assert list(cols)[0] == "id"
    assert cols["created"] is Kind.TIME
    assert cols["balance"] is Kind.BIGINT
    assert cols["email"] is Kind.TEXT
    assert cols["currency"] is Kind.TEXT
    assert cols["metadata"] is Kind.JSON
    assert cols["address"] is Kind.JSON
    assert cols["livemode"] is Kind.BOOL
    assert cols["tax_exempt"] is Kind.TEXT  # an enum, as text
    assert cols["default_source_id"] is Kind.REF  # expandable -> <field>_id
    assert "default_source" not in cols


def test_charge_amounts_are_bigint_and_references_are_ids():
    cols = _kinds("charge")
    assert cols["amount"] is Kind.BIGINT
    assert cols["amount_refunded"] is Kind.BIGINT
    assert cols["customer_id"] is Kind.REF
    assert cols["balance_transaction_id"] is Kind.REF
    assert cols["refunds"] is Kind.JSON


def test_every_collection_has_columns_and_its_key():
    for c in build_catalog():
        cols = {col.name for col in columns_for(c.name)}
        assert c.key in cols, c.name
        assert len(cols) >= 3, c.name


def test_legacy_collections_use_hand_declared_columns():
    cols = _kinds("order")
    assert cols["customer_id"] is Kind.REF
    assert cols["amount"] is Kind.BIGINT
    assert cols["updated"] is Kind.TIME
