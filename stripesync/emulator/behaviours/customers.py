"""Customers, their sources and external accounts, payment methods, tax ids and
customer balance transactions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stripesync.emulator.behaviours.common import CARDS, make_bank_account, make_card, require_ref
from stripesync.emulator.behaviours.subscriptions import _cancel_subscription
from stripesync.emulator.registry import behaviour, endpoint
from stripesync.emulator.store import Index, Record

if TYPE_CHECKING:
    from stripesync.emulator.engine import Call, Emulator

customer = behaviour(
    "customer",
    retrieve_deleted=True,
    consumes={"source", "payment_method", "tax_id_data", "cash_balance", "tax", "validate"},
    defaults={
        "balance": 0,
        "delinquent": False,
        "preferred_locales": [],
        "tax_exempt": "none",
        "next_invoice_sequence": 1,
        "invoice_credit_balance": {},
    },
)


@customer.on_create
def _customer_create(call: Call, obj: dict[str, Any]) -> None:
    em = call.em
    if obj.get("invoice_settings") is None:
        obj["invoice_settings"] = em.shapes.new("Customer.InvoiceSettings")
    if not obj.get("invoice_prefix"):
        obj["invoice_prefix"] = em.ids.token(8).upper()
    for datum in call.param("tax_id_data") or []:
        tax = em.new_object("tax_id", customer=obj["id"])
        em.apply_params("TaxId", tax, datum)
        _tax_id_fill(call, tax)
        rec = em.insert("tax_id", tax)
        em.emit_for(call, rec, "created")
    src = call.param("source")
    if isinstance(src, str) and src:
        card = _attach_source(call, obj["id"], src)
        obj["default_source"] = card["id"]
    pm = call.param("payment_method")
    if isinstance(pm, str) and pm:
        attach_payment_method(call, payment_method_ref(call, pm, "payment_method"), obj["id"])


@customer.on_update
def _customer_update(call: Call, rec: Record, before: dict[str, Any]) -> None:
    src = call.param("source")
    if isinstance(src, str) and src:
        card = _attach_source(call, rec.id, src)
        rec.obj["default_source"] = card["id"]


@customer.on_delete
def _customer_delete(call: Call, rec: Record) -> None:
    em = call.em
    ix = em.store.path_index.get(f"/v1/subscriptions?customer={rec.id}")
    for sub in list(ix.records()) if ix is not None else []:
        if sub.obj.get("status") not in ("canceled", "incomplete_expired"):
            _cancel_subscription(call, sub, reason="cancellation_requested")
    for path in (f"/v1/customers/{rec.id}/sources", f"/v1/customers/{rec.id}/tax_ids"):
        ix = em.store.path_index.get(path)
        for child in list(ix.records()) if ix is not None else []:
            em.store.remove(child)


def _attach_source(call: Call, customer_id: str, token: str) -> dict[str, Any]:
    em = call.em
    if token.startswith("src_"):
        src = require_ref(call, "source", token, "source")
        before = src.copy()
        src.obj["customer"] = customer_id
        src.obj["status"] = "chargeable"
        em.changed(call, src, before, event=None)
        em.emit_for(call, src, "created")
        return src.obj
    if token.startswith("btok_"):
        obj = make_bank_account(em, customer=customer_id)
        rec = em.insert("bank_account", obj)
    else:
        obj = make_card(em, token, customer=customer_id)
        rec = em.insert("card", obj)
    em.emit_for(call, rec, "created")
    return obj


def _source_prefix(obj: dict[str, Any]) -> str | None:
    if obj.get("customer"):
        return "customer.source"
    if obj.get("account"):
        return "account.external_account"
    return None


behaviour("card", event_prefix=_source_prefix)
behaviour("bank_account", event_prefix=_source_prefix)
behaviour("source", event_prefix=lambda o: "customer.source" if o.get("customer") else "source")


@endpoint("POST", "/v1/customers/{customer}/sources")
def _create_customer_source(call: Call) -> Any:
    em = call.em
    cus = require_ref(call, "customer", call.pp("customer"), "customer")
    obj = _attach_source(call, cus.id, call.param("source"))
    rec = em.find(obj["id"], ["card", "bank_account", "source"])
    assert rec is not None
    if call.param("metadata"):
        before = rec.copy()
        em.apply_params(em.cls_of(rec.type), rec.obj, {"metadata": call.param("metadata")})
        em.changed(call, rec, before, event=None)
    if not cus.obj.get("default_source"):
        before = cus.copy()
        cus.obj["default_source"] = rec.id
        em.changed(call, cus, before)
    return rec


@endpoint("DELETE", "/v1/customers/{customer}/sources/{id}")
def _delete_customer_source(call: Call) -> Any:
    em = call.em
    rec = em.require(call, em.lookup(call))
    cus = em.get("customer", call.pp("customer"))
    if rec.type == "source":
        before = rec.copy()
        rec.obj["status"] = "consumed"
        em.changed(call, rec, before, event=None)
        em.emit_for(call, rec, "deleted")
        em.store.remove_from_list(f"/v1/customers/{call.pp('customer')}/sources", rec)
        out: Any = rec
    else:
        out = em.remove(call, rec)
    if cus is not None and cus.obj.get("default_source") == rec.id:
        before = cus.copy()
        ix = em.store.path_index.get(f"/v1/customers/{cus.id}/sources")
        nxt = next(iter(ix.records()), None) if ix is not None else None
        cus.obj["default_source"] = nxt.id if nxt is not None else None
        em.changed(call, cus, before)
    return out


@endpoint("POST", "/v1/customers/{customer}/sources/{id}/verify")
def _verify_bank_account(call: Call) -> Any:
    em = call.em
    rec = em.require(call, em.lookup(call))
    before = rec.copy()
    rec.obj["status"] = "verified" if rec.type == "bank_account" else rec.obj.get("status")
    em.changed(call, rec, before)
    return rec


@endpoint("POST", "/v1/accounts/{account}/external_accounts")
def _create_external_account(call: Call) -> Any:
    em = call.em
    acct = require_ref(call, "account", call.pp("account"), "account")
    ext = call.param("external_account")
    if isinstance(ext, dict):
        if ext.get("object") == "card":
            obj = make_card(em, "tok_visa", account=acct.id)
            obj_type = "card"
        else:
            obj = make_bank_account(em, account=acct.id)
            for k in ("country", "currency", "account_holder_name", "account_holder_type"):
                if ext.get(k):
                    obj[k] = ext[k]
            if ext.get("account_number"):
                obj["last4"] = str(ext["account_number"])[-4:]
            if ext.get("routing_number"):
                obj["routing_number"] = ext["routing_number"]
            obj_type = "bank_account"
    elif isinstance(ext, str) and ext.startswith("tok_"):
        obj, obj_type = make_card(em, ext, account=acct.id), "card"
    else:
        obj, obj_type = make_bank_account(em, account=acct.id), "bank_account"
    path = f"/v1/accounts/{acct.id}/external_accounts"
    ix = em.store.path_index.get(path)
    obj["default_for_currency"] = bool(call.param("default_for_currency")) or not (ix and len(ix))
    if call.param("metadata"):
        obj["metadata"] = dict(call.param("metadata"))
    rec = em.insert(obj_type, obj)
    em.emit_for(call, rec, "created")
    return rec


# ---- payment methods ---------------------------------------------------------------------

PM_BRANDS = {"Visa": "visa", "MasterCard": "mastercard", "American Express": "amex"}


def payment_method_ref(call: Call, pm_id: Any, param: str) -> Record:
    """Payment method `pm_id`; a test-mode id (`pm_card_visa`, `pm_card_mastercard`, …)
    stands, as on Stripe, for a new card payment method made each time it is used."""
    em = call.em
    test_card = isinstance(pm_id, str) and pm_id.startswith("pm_card_")
    if test_card and em.get("payment_method", pm_id) is None:
        token = "tok_" + pm_id.removeprefix("pm_card_")
        if token in CARDS:
            brand, last4, funding = CARDS[token]
            card = em.shapes.new("PaymentMethod.Card")
            card.update(
                brand=PM_BRANDS.get(brand, brand.lower()),
                display_brand=PM_BRANDS.get(brand, brand.lower()),
                last4=last4,
                funding=funding,
                exp_month=12,
                exp_year=2034,
                country="US",
                fingerprint=em.ids.token(16),
            )
            pm = em.new_object("payment_method", type="card", card=card)
            return em.insert("payment_method", pm)
    return require_ref(call, "payment_method", pm_id, param)


def attach_payment_method(call: Call, pm: Record, customer_id: str) -> Record:
    before = pm.copy()
    pm.obj["customer"] = customer_id
    call.em.changed(call, pm, before, event=None)
    call.em.emit_for(call, pm, "attached")
    return pm


def card_as_payment_method(em: Emulator, card: dict[str, Any]) -> dict[str, Any]:
    """A customer's legacy card source (`card_…`) as Stripe lists it among the customer's
    payment methods: a `card` payment method with the source's id."""
    brand = str(card.get("brand") or "Visa")
    details = em.shapes.new("PaymentMethod.Card")
    details.update(
        brand=PM_BRANDS.get(brand, brand.lower()),
        display_brand=PM_BRANDS.get(brand, brand.lower()),
        last4=card.get("last4"),
        exp_month=card.get("exp_month"),
        exp_year=card.get("exp_year"),
        funding=card.get("funding"),
        country=card.get("country"),
        fingerprint=card.get("fingerprint"),
    )
    details["checks"] = {
        "address_line1_check": card.get("address_line1_check"),
        "address_postal_code_check": card.get("address_zip_check"),
        "cvc_check": card.get("cvc_check"),
    }
    pm = em.shapes.new("PaymentMethod")
    billing = em.shapes.new("PaymentMethod.BillingDetails")
    billing["name"] = card.get("name")
    pm.update(
        id=card["id"],
        type="card",
        card=details,
        billing_details=billing,
        created=card.get("created") or 0,
        customer=card.get("customer"),
        livemode=bool(card.get("livemode")),
        metadata=dict(card.get("metadata") or {}),
        allow_redisplay="unspecified",
    )
    return em.shapes.prune_type("payment_method", pm)


def _customer_payment_methods(call: Call, customer_id: str, url: str) -> bytes:
    """A customer's payment methods, its card sources among them, newest first."""
    from stripesync.emulator.lists import created_range, filters, list_bytes

    em = call.em
    index = Index()
    pms = em.store.path_index.get(f"/v1/payment_methods?customer={customer_id}")
    for rec in pms.records() if pms is not None else []:
        index.add(rec)
    sources = em.store.path_index.get(f"/v1/customers/{customer_id}/sources")
    for rec in sources.records() if sources is not None else []:
        if rec.type == "card":
            pm = card_as_payment_method(em, rec.obj)
            index.add(Record("payment_method", rec.id, rec.created, rec.seq, pm))
    return list_bytes(
        em,
        call,
        index,
        url,
        ["payment_method", "card"],
        created=created_range(call.param("created")),
        predicate=filters(call, ["payment_method"]),
    )


@endpoint("GET", "/v1/payment_methods")
def _list_payment_methods(call: Call) -> Any:
    from stripesync.emulator.lists import list_route

    cus = call.param("customer")
    if isinstance(cus, str) and cus:
        return _customer_payment_methods(call, cus, "/v1/payment_methods")
    return list_route(call)


@endpoint("GET", "/v1/customers/{customer}/payment_methods")
def _list_customer_payment_methods(call: Call) -> Any:
    cus = require_ref(call, "customer", call.pp("customer"), "customer")
    return _customer_payment_methods(call, cus.id, f"/v1/customers/{cus.id}/payment_methods")


@endpoint("POST", "/v1/payment_methods/{payment_method}/attach")
def _attach_payment_method(call: Call) -> Any:
    cus = require_ref(call, "customer", call.param("customer"), "customer")
    pm = payment_method_ref(call, call.pp("payment_method"), "payment_method")
    return attach_payment_method(call, pm, cus.id)


# ---- tax ids -----------------------------------------------------------------------------


def _tax_id_fill(call: Call, obj: dict[str, Any]) -> None:
    em = call.em
    owner = obj.get("owner") or em.shapes.new("TaxId.Owner")
    if obj.get("customer"):
        owner.update(type="customer", customer=obj["customer"])
    elif not owner.get("type"):
        owner["type"] = "self"
    obj["owner"] = owner
    code = str(obj.get("type") or "")
    value = str(obj.get("value") or "")
    country = code.split("_", 1)[0].upper() if code else None
    if code == "eu_vat" and len(value) >= 2:
        country = value[:2].upper()
    obj["country"] = country
    obj["verification"] = {"status": "pending", "verified_address": None, "verified_name": None}


tax_id = behaviour(
    "tax_id",
    event_prefix=lambda o: "customer.tax_id" if o.get("customer") else None,
)


@tax_id.on_create
def _tax_id_create(call: Call, obj: dict[str, Any]) -> None:
    owner = call.param("owner")
    if isinstance(owner, dict) and owner.get("type") == "customer":
        require_ref(call, "customer", owner.get("customer"), "owner[customer]")
        obj["customer"] = owner["customer"]
    _tax_id_fill(call, obj)


def _tax_id_default_filter(call: Call, params: dict[str, Any]) -> Any:
    if call.route is None or call.route.parent_param or "owner" in params:
        return None
    return lambda o: (o.get("owner") or {}).get("type", "self") == "self"


tax_id.default_filter = _tax_id_default_filter


# ---- customer balance --------------------------------------------------------------------

cbt = behaviour("customer_balance_transaction")


@cbt.on_create
def _cbt_create(call: Call, obj: dict[str, Any]) -> None:
    em = call.em
    cus = require_ref(call, "customer", obj.get("customer"), "customer")
    before = cus.copy()
    balance = int(cus.obj.get("balance") or 0) + int(obj.get("amount") or 0)
    obj.update(type="adjustment", ending_balance=balance)
    cus.obj["balance"] = balance
    if not cus.obj.get("currency"):
        cus.obj["currency"] = obj.get("currency")
    em.changed(call, cus, before)
