"""The children a parent's list page carries, checked against the pinned SDK's types:
an includable list is an optional list field of the parent (`field?: ApiList<T>`, left
out unless asked) holding the child's class; a hint is a field of the parent that is
there when asked (or always, when stored)."""

from stripesync.catalog import build_catalog, load_spec
from stripesync.catalog.carry import CARRIES, carries_of, carry_for
from stripesync.catalog.nullability import load_nullability

CAT = build_catalog()


def _classes(d: dict) -> set[str]:
    if d.get("t") == "class":
        return {d["name"]}
    if d.get("t") in ("listobject", "list", "expandable"):
        return _classes(d["of"])
    if d.get("t") == "union":
        return set().union(*(_classes(o) for o in d["of"]))
    return set()


def test_every_carry_matches_the_types() -> None:
    spec, states = load_spec(), load_nullability()
    assert CARRIES
    for cr in CARRIES:
        parent, child = CAT[cr.parent], CAT[cr.child]
        assert parent.sdk_class and child.sdk_class
        # the child is read through this parent
        assert any(r.parent == cr.parent and r.path for r in child.reads), cr
        d = spec.fields(parent.sdk_class)[cr.field]
        state = states.state(parent.sdk_class, cr.field)
        if cr.hint is None:
            # a list Stripe leaves out unless asked, of the child's class
            assert d["t"] == "listobject" and child.sdk_class in _classes(d), cr
            assert state == "optional", cr
        elif cr.stored:
            # always sent, null until there is one: a stored parent says it
            assert state == "nullable" and child.sdk_class in _classes(d), cr
        else:
            # a field left out unless asked (includable), asked with the list
            assert state in ("optional", "optional_nullable"), cr
        assert cr.expand == f"data.{cr.field}"


def test_lookups() -> None:
    assert {c.child for c in carries_of("customer")} == {
        "source", "bank_account", "tax_id", "customer_cash_balance_transaction"
    }
    # a stored hint is not asked for with the parent's list
    assert not carries_of("setup_intent")
    assert carry_for("setup_attempt", "setup_intent") is not None
    # bank accounts of connected accounts are read per account, not carried
    assert carry_for("bank_account", "account") is None


def test_hints() -> None:
    cash = carry_for("customer_cash_balance_transaction", "customer")
    assert cash is not None and cash.hint is not None
    assert cash.hint({"object": "cash_balance", "available": {"usd": 0}})
    assert not cash.hint({"object": "cash_balance", "available": {}})
    assert not cash.hint({"object": "cash_balance", "available": None})
    assert not cash.hint(None)
    attempt = carry_for("setup_attempt", "setup_intent")
    assert attempt is not None and attempt.hint is not None
    assert attempt.hint("setatt_1") and not attempt.hint(None)
