"""Every object the emulator makes, held against Stripe's own types (issue 12, item 2).

The generated account, and the write flows: one object of every collection that has a
create route (97 routes), created through the emulator's request path with minimal
valid params (the spec's required params; the collections for which Stripe asks for
one of two params, or a hash whose fields are all optional, given theirs in PARAMS),
updated where an update route takes `metadata`, and the events all of it emitted
(`event.data.object`). The collections that neither makes (`country_spec`,
`exchange_rate`, `tax_code`, `review`, ...) are served empty unless given to
`/_emulator/load`, which keeps objects as given.
Each object, each object embedded in it (`charge.source`, `subscription.items.data[]`)
and the nested objects they hold by value are checked with
`stripesync.catalog.nullability.check_object`: no null where the types forbid it, no
field Stripe leaves out sent as null, no includable list sent without `expand`, no
missing always-sent field, and every enum within the SDK's declared values.
"""

from __future__ import annotations

from stripesync.emulator import Emulator
from stripesync.emulator.conformance import Flows, checked_objects, stored_objects, violations
from stripesync.emulator.generator import generate
from stripesync.emulator.routes import CREATE


def test_every_generated_object_and_event_conforms_to_the_types() -> None:
    em = Emulator(seed=0)
    generate(em, 60, seed=0, accounts=2, checkout_sessions=3, dispute_ratio=0.1, events=True)
    objects = stored_objects(em)
    assert len(objects) > 400
    assert {"customer", "charge", "dispute", "application_fee", "event"} <= set(em.store.by_type)
    assert violations(em, objects) == []


def test_every_object_the_write_flows_produce_conforms_to_the_types() -> None:
    flows = Flows()
    flows.run()
    em = flows.em
    assert flows.failed == {}
    created = {o.get("object") for o in flows.responses}
    assert {r.types[0] for r in em.routes if r.kind == CREATE} <= created
    events = list(em.store.by_type.get("event", {}).values())[flows.first_event :]
    assert len(events) > 80, "the write flows emit events"
    objects = checked_objects(flows)
    assert violations(em, objects) == []


def test_the_check_finds_each_kind_of_violation() -> None:
    """The check itself: one object breaking each rule."""
    em = Emulator(seed=1)
    cus = em.new_object("customer", email="a@example.com")
    bad = {
        **cus,
        "invoice_settings": None,  # required
        "sources": None,  # optional: left out when unset
        "subscriptions": {"object": "list", "data": [], "has_more": False, "url": "/"},
        "tax_exempt": "sometimes",  # not one of the enum's values
    }
    del bad["balance"]  # always sent
    found = violations(em, [("made", bad)])
    assert found == [
        "made: customer.balance: missing_required",
        "made: customer.invoice_settings: null_required",
        "made: customer.sources: null_left_out",
        "made: customer.subscriptions: present_unless_included",
        "made: customer.tax_exempt: enum_value",
    ]
