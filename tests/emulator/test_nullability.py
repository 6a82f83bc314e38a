import importlib.util
import json
from pathlib import Path
from typing import Any

from stripe._util import convert_to_stripe_object

from stripesync.catalog.nullability import NULL_LEFT_OUT, load_nullability
from stripesync.emulator import Emulator
from stripesync.emulator.generator import generate

ROOT = Path(__file__).resolve().parents[2]


def _tool() -> Any:
    spec = importlib.util.spec_from_file_location(
        "measure_nullability", ROOT / "tools" / "measure_nullability.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_generated_account_is_measured_against_the_types() -> None:
    """The measure covers every generated object type; the emulator leaves out the
    unset fields the types mark optional, so none is null where Stripe leaves it out
    (docs/emulator-contract.md)."""
    tool = _tool()
    tallies = tool.measure_emulator(customers=20)
    assert {"customer", "charge", "invoice", "subscription", "price"} <= set(tallies)
    for t in tallies.values():
        assert t.objects > 0 and t.fields > 0
        assert 0 <= t.agree <= t.fields
    fields = sum(t.fields for t in tallies.values())
    agree = sum(t.agree for t in tallies.values())
    # a floor, not a goal: it may only rise as the emulator adopts the data
    assert agree / fields > 0.95
    left_out = {k: (t.violations or {}).get(NULL_LEFT_OUT, 0) for k, t in tallies.items()}
    assert sum(left_out.values()) == 0, left_out
    assert "customer" in tool.report(tallies)


def test_the_default_account_has_no_null_left_out_field() -> None:
    """The tool's default account (100 customers, seed 0), as the docs report it."""
    tallies = _tool().measure_emulator()
    assert sum((t.violations or {}).get(NULL_LEFT_OUT, 0) for t in tallies.values()) == 0


def test_optional_fields_are_left_out_and_expand_brings_includable_ones(emulator: Any) -> None:
    client = emulator.stripe()
    cus = client.v1.customers.create(params={"email": "a@example.com"})
    raw = cus.to_dict()
    for name in ("sources", "subscriptions", "tax_ids", "tax"):
        assert name not in raw, name
    assert raw["email"] == "a@example.com"  # a field with a value stays
    client.v1.customers.tax_ids.create(cus.id, params={"type": "eu_vat", "value": "DE123456789"})
    got = client.v1.customers.retrieve(
        cus.id, params={"expand": ["sources", "subscriptions", "tax_ids", "tax"]}
    )
    assert got.sources.object == "list" and got.sources.data == []
    assert got.subscriptions.object == "list"
    assert [t.value for t in got.tax_ids.data] == ["DE123456789"]
    assert "automatic_tax" in got.tax


def test_promotion_code_and_shipping_rate_through_the_sdk(emulator: Any) -> None:
    """The SDK raised AttributeError on `restrictions.currency_options: null` and on
    `fixed_amount.currency_options: null`; Stripe leaves them out."""
    client = emulator.stripe()
    coupon = client.v1.coupons.create(params={"percent_off": 10, "duration": "once"})
    promo = client.v1.promotion_codes.create(
        params={"promotion": {"type": "coupon", "coupon": coupon.id}, "code": "TEN"}
    )
    assert promo.code == "TEN"
    assert "currency_options" not in promo.restrictions
    again = client.v1.promotion_codes.retrieve(promo.id)
    assert again.id == promo.id
    rate = client.v1.shipping_rates.create(
        params={
            "display_name": "Ground",
            "type": "fixed_amount",
            "fixed_amount": {"amount": 500, "currency": "usd"},
        }
    )
    assert rate.fixed_amount.amount == 500
    assert "currency_options" not in rate.fixed_amount
    got = client.v1.shipping_rates.retrieve(rate.id)
    assert got.fixed_amount.currency == "usd"
    assert [r.id for r in client.v1.shipping_rates.list().data] == [rate.id]


def test_every_generated_object_and_event_parses_with_the_sdk() -> None:
    """Item 6: the official SDK turns every object of the generated account, and every
    event, into its StripeObject class without error."""
    em = Emulator(seed=0)
    generate(em, 40, seed=0, accounts=2, checkout_sessions=3, events=True)
    parsed = 0
    types: set[str] = set()
    for obj_type, records in sorted(em.store.by_type.items()):
        for rec in records.values():
            raw = json.loads(rec.to_bytes())
            obj = convert_to_stripe_object(raw, api_mode="V1")
            assert obj.to_dict().get("id") == raw.get("id"), obj_type
            parsed += 1
            types.add(obj_type)
    assert {"event", "customer", "invoice", "charge", "subscription"} <= types
    assert parsed > 250


def test_the_sdk_lists_every_generated_collection(emulator: Any) -> None:
    emulator.controls.generate(customers=15, events=True)
    client = emulator.stripe()
    for name in ("customers", "charges", "invoices", "subscriptions", "prices", "events"):
        page = getattr(client.v1, name).list(params={"limit": 100})
        assert page.data, name
        for item in page.data:
            assert item.id
    data = load_nullability()
    assert data.state("Event", "account") == "optional"
    ev = client.v1.events.list(params={"limit": 1}).data[0]
    assert "account" not in ev and "context" not in ev
