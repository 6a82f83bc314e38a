"""Collections current API versions no longer have, served to requests whose
`Stripe-Version` still had them. The SDK no longer describes these objects, so their
shapes and parameters are declared here by hand (from Stripe's API reference of the
time).

- order, order_return, sku (Orders v1): `/v1/orders`, `/v1/order_returns`, `/v1/skus`,
  for versions before 2022-08-01;
- three_d_secure: `/v1/3d_secure`, before 2022-08-01;
- usage_record, usage_record_summary:
  `/v1/subscription_items/{id}/usage_records` and `.../usage_record_summaries`,
  before 2025-03-31 (basil);
- the upcoming invoice: `GET /v1/invoices/upcoming` and `/v1/invoices/upcoming/lines`,
  before 2025-03-31 (basil).

Orders v1 was retired from the SDKs in May 2022 (stripe-python 3.0); the first API
version after that is 2022-08-01, taken as the cut-off for it and for the 3D Secure
sources endpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stripesync.emulator.errors import StripeError
from stripesync.emulator.registry import behaviour
from stripesync.emulator.routes import CREATE, DELETE, LIST, RETRIEVE, UPDATE, Route

if TYPE_CHECKING:
    from stripesync.catalog.spec import Spec
    from stripesync.emulator.engine import Call, Emulator
    from stripesync.emulator.shapes import Shapes
    from stripesync.emulator.store import Record

ORDERS_UNTIL = "2022-08-01"
BASIL = "2025-03-31"


def _s(null: bool = True) -> dict[str, Any]:
    return {"t": "str", "null": True} if null else {"t": "str"}


def _i(null: bool = True) -> dict[str, Any]:
    return {"t": "int", "null": True} if null else {"t": "int"}


_B = {"t": "bool"}
_MD = {"t": "map", "of": {"t": "str"}}


def _obj(name: str) -> dict[str, Any]:
    return {"t": "enum", "values": [name]}


def _c(name: str, null: bool = True) -> dict[str, Any]:
    d: dict[str, Any] = {"t": "class", "name": name}
    if null:
        d["null"] = True
    return d


CLASSES: dict[str, dict[str, Any]] = {
    "LegacyOrder": {
        "fields": {
            "amount": _i(False),
            "amount_returned": _i(),
            "application": _s(),
            "application_fee": _i(),
            "charge": {"t": "expandable", "of": _c("Charge", False), "null": True},
            "created": _i(False),
            "currency": _s(False),
            "customer": {"t": "expandable", "of": _c("Customer", False), "null": True},
            "email": _s(),
            "external_coupon_code": _s(),
            "id": _s(False),
            "items": {"t": "list", "of": _c("LegacyOrder.Item", False)},
            "livemode": _B,
            "metadata": _MD,
            "object": _obj("order"),
            "returns": {"t": "listobject", "of": _c("LegacyOrderReturn", False), "null": True},
            "selected_shipping_method": _s(),
            "shipping": {"t": "any", "null": True},
            "shipping_methods": {"t": "list", "of": {"t": "any"}, "null": True},
            "status": {
                "t": "enum",
                "values": ["created", "paid", "canceled", "fulfilled", "returned"],
            },
            "status_transitions": _c("LegacyOrder.StatusTransitions", False),
            "updated": _i(),
            "upstream_id": _s(),
        }
    },
    "LegacyOrder.Item": {
        "fields": {
            "amount": _i(False),
            "currency": _s(False),
            "description": _s(False),
            "object": _obj("order_item"),
            "parent": _s(),
            "quantity": _i(),
            "type": {"t": "enum", "values": ["sku", "tax", "shipping", "discount"]},
        }
    },
    "LegacyOrder.StatusTransitions": {
        "fields": {"canceled": _i(), "fulfiled": _i(), "paid": _i(), "returned": _i()}
    },
    "LegacyOrderReturn": {
        "fields": {
            "amount": _i(False),
            "created": _i(False),
            "currency": _s(False),
            "id": _s(False),
            "items": {"t": "list", "of": _c("LegacyOrder.Item", False)},
            "livemode": _B,
            "object": _obj("order_return"),
            "order": {"t": "expandable", "of": _c("LegacyOrder", False), "null": True},
            "refund": {"t": "expandable", "of": _c("Refund", False), "null": True},
        }
    },
    "LegacySku": {
        "fields": {
            "active": _B,
            "attributes": {"t": "map", "of": {"t": "str"}},
            "created": _i(False),
            "currency": _s(False),
            "id": _s(False),
            "image": _s(),
            "inventory": _c("LegacySku.Inventory", False),
            "livemode": _B,
            "metadata": _MD,
            "object": _obj("sku"),
            "package_dimensions": {"t": "any", "null": True},
            "price": _i(False),
            "product": {"t": "expandable", "of": _c("Product", False)},
            "updated": _i(False),
        }
    },
    "LegacySku.Inventory": {
        "fields": {
            "quantity": _i(),
            "type": {"t": "enum", "values": ["finite", "bucket", "infinite"]},
            "value": _s(),
        }
    },
    "LegacyThreeDSecure": {
        "fields": {
            "amount": _i(False),
            "authenticated": _B,
            "card": _c("Card", False),
            "created": _i(False),
            "currency": _s(False),
            "id": _s(False),
            "livemode": _B,
            "object": _obj("three_d_secure"),
            "redirect_url": _s(),
            "status": _s(False),
        }
    },
    "LegacyUsageRecord": {
        "fields": {
            "id": _s(False),
            "livemode": _B,
            "object": _obj("usage_record"),
            "quantity": _i(False),
            "subscription_item": _s(False),
            "timestamp": _i(False),
        }
    },
    "LegacyUsageRecordSummary": {
        "fields": {
            "id": _s(False),
            "invoice": _s(),
            "livemode": _B,
            "object": _obj("usage_record_summary"),
            "period": _c("LegacyUsageRecordSummary.Period", False),
            "subscription_item": _s(False),
            "total_usage": _i(False),
        }
    },
    "LegacyUsageRecordSummary.Period": {"fields": {"end": _i(), "start": _i()}},
}


def _p(t: str, required: bool = False, **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"t": t, **kw}
    if required:
        d["required"] = True
    return d


_EXPAND = {"t": "list", "of": {"t": "str"}}
_PAGING = {
    "limit": _p("int"),
    "starting_after": _p("str"),
    "ending_before": _p("str"),
    "expand": _EXPAND,
    "created": {"t": "union", "of": [{"t": "class", "name": "LegacyCreatedRange"}, {"t": "int"}]},
}
_ITEM = {
    "amount": _p("int"),
    "currency": _p("str"),
    "description": _p("str"),
    "parent": _p("str"),
    "quantity": _p("int"),
    "type": _p("enum", values=["sku", "tax", "shipping", "discount"]),
}
PARAMS: dict[str, dict[str, Any]] = {
    "LegacyCreatedRange": {
        "fields": {"gt": _p("int"), "gte": _p("int"), "lt": _p("int"), "lte": _p("int")}
    },
    "LegacyOrderItem": {"fields": _ITEM},
    "LegacyOrderCreateParams": {
        "fields": {
            "coupon": _p("str"),
            "currency": _p("str", True),
            "customer": _p("str"),
            "email": _p("str"),
            "expand": _EXPAND,
            "items": {"t": "list", "of": {"t": "class", "name": "LegacyOrderItem"}},
            "metadata": {"t": "map", "of": {"t": "str"}, "emptyable": True},
            "shipping": {"t": "any"},
        }
    },
    "LegacyOrderUpdateParams": {
        "fields": {
            "coupon": _p("str"),
            "expand": _EXPAND,
            "metadata": {"t": "map", "of": {"t": "str"}, "emptyable": True},
            "selected_shipping_method": _p("str"),
            "shipping": {"t": "any"},
            "status": _p("enum", values=["canceled", "created", "fulfilled", "paid", "returned"]),
        }
    },
    "LegacyOrderPayParams": {
        "fields": {
            "customer": _p("str"),
            "source": _p("str"),
            "email": _p("str"),
            "expand": _EXPAND,
            "metadata": {"t": "map", "of": {"t": "str"}, "emptyable": True},
        }
    },
    "LegacyOrderReturnParams": {
        "fields": {
            "expand": _EXPAND,
            "items": {"t": "list", "of": {"t": "class", "name": "LegacyOrderItem"}},
        }
    },
    "LegacyOrderListParams": {
        "fields": {
            **_PAGING,
            "customer": _p("str"),
            "ids": {"t": "list", "of": {"t": "str"}},
            "status": _p("str"),
            "upstream_ids": {"t": "list", "of": {"t": "str"}},
        }
    },
    "LegacyOrderReturnListParams": {"fields": {**_PAGING, "order": _p("str")}},
    "LegacyRetrieveParams": {"fields": {"expand": _EXPAND}},
    "LegacySkuInventory": {
        "fields": {
            "quantity": _p("int"),
            "type": _p("enum", True, values=["finite", "bucket", "infinite"]),
            "value": _p("str"),
        }
    },
    "LegacySkuCreateParams": {
        "fields": {
            "active": _p("bool"),
            "attributes": {"t": "map", "of": {"t": "str"}},
            "currency": _p("str", True),
            "expand": _EXPAND,
            "id": _p("str"),
            "image": _p("str"),
            "inventory": {"t": "class", "name": "LegacySkuInventory", "required": True},
            "metadata": {"t": "map", "of": {"t": "str"}, "emptyable": True},
            "package_dimensions": {"t": "any"},
            "price": _p("int", True),
            "product": _p("str", True),
        }
    },
    "LegacySkuUpdateParams": {
        "fields": {
            "active": _p("bool"),
            "attributes": {"t": "map", "of": {"t": "str"}},
            "currency": _p("str"),
            "expand": _EXPAND,
            "image": _p("str"),
            "inventory": {"t": "class", "name": "LegacySkuInventory"},
            "metadata": {"t": "map", "of": {"t": "str"}, "emptyable": True},
            "package_dimensions": {"t": "any"},
            "price": _p("int"),
            "product": _p("str"),
        }
    },
    "LegacySkuListParams": {
        "fields": {
            **_PAGING,
            "active": _p("bool"),
            "attributes": {"t": "map", "of": {"t": "str"}},
            "ids": {"t": "list", "of": {"t": "str"}},
            "in_stock": _p("bool"),
            "product": _p("str"),
        }
    },
    "LegacyDeleteParams": {"fields": {}},
    "LegacyThreeDSecureCreateParams": {
        "fields": {
            "amount": _p("int", True),
            "card": _p("str"),
            "currency": _p("str", True),
            "customer": _p("str"),
            "expand": _EXPAND,
            "return_url": _p("str", True),
        }
    },
    "LegacyUsageRecordCreateParams": {
        "fields": {
            "action": _p("enum", values=["increment", "set"]),
            "expand": _EXPAND,
            "quantity": _p("int", True),
            "timestamp": {"t": "union", "of": [{"t": "int"}, {"t": "enum", "values": ["now"]}]},
        }
    },
    "LegacyUsageRecordSummaryListParams": {
        "fields": {k: v for k, v in _PAGING.items() if k != "created"}
    },
}

EVENT_TYPES = frozenset(
    {
        "order.created",
        "order.updated",
        "order.payment_succeeded",
        "order.payment_failed",
        "order_return.created",
        "sku.created",
        "sku.updated",
        "sku.deleted",
    }
)


def event_class(spec: Spec) -> dict[str, dict[str, Any]]:
    """The SDK's `Event` class, its `type` enum with the legacy event types: the SDKs
    of the API versions that serve Orders v1 declare them."""
    event = spec.classes["Event"]
    fields = dict(event["fields"])
    t = fields["type"]
    fields["type"] = {**t, "values": [*t["values"], *sorted(EVENT_TYPES - set(t["values"]))]}
    return {"Event": {**event, "fields": fields}}


def routes(shapes: Shapes) -> list[Route]:
    o, r, s = ("order",), ("order_return",), ("sku",)

    def mk(
        verb: str,
        template: str,
        kind: str,
        method: str,
        params: str | None,
        types: tuple[str, ...],
        until: str,
        **kw: Any,
    ) -> Route:
        cls = shapes.type_class.get(types[0]) if types else None
        route = Route(verb, template, kind, method, params, types, cls, until=until, **kw)
        if kind in (RETRIEVE, UPDATE, DELETE) or kw.get("target_param"):
            route.target_types = types
        return route

    out = [
        mk("GET", "/v1/orders", LIST, "list", "LegacyOrderListParams", o, ORDERS_UNTIL),
        mk("POST", "/v1/orders", CREATE, "create", "LegacyOrderCreateParams", o, ORDERS_UNTIL),
        mk(
            "GET",
            "/v1/orders/{id}",
            RETRIEVE,
            "retrieve",
            "LegacyRetrieveParams",
            o,
            ORDERS_UNTIL,
            target_param="id",
        ),
        mk(
            "POST",
            "/v1/orders/{id}",
            UPDATE,
            "update",
            "LegacyOrderUpdateParams",
            o,
            ORDERS_UNTIL,
            target_param="id",
        ),
        mk(
            "POST",
            "/v1/orders/{id}/pay",
            "action",
            "pay",
            "LegacyOrderPayParams",
            o,
            ORDERS_UNTIL,
            target_param="id",
        ),
        mk(
            "POST",
            "/v1/orders/{id}/returns",
            "action",
            "return_order",
            "LegacyOrderReturnParams",
            o,
            ORDERS_UNTIL,
            target_param="id",
        ),
        mk(
            "GET", "/v1/order_returns", LIST, "list", "LegacyOrderReturnListParams", r, ORDERS_UNTIL
        ),
        mk(
            "GET",
            "/v1/order_returns/{id}",
            RETRIEVE,
            "retrieve",
            "LegacyRetrieveParams",
            r,
            ORDERS_UNTIL,
            target_param="id",
        ),
        mk("GET", "/v1/skus", LIST, "list", "LegacySkuListParams", s, ORDERS_UNTIL),
        mk("POST", "/v1/skus", CREATE, "create", "LegacySkuCreateParams", s, ORDERS_UNTIL),
        mk(
            "GET",
            "/v1/skus/{id}",
            RETRIEVE,
            "retrieve",
            "LegacyRetrieveParams",
            s,
            ORDERS_UNTIL,
            target_param="id",
        ),
        mk(
            "POST",
            "/v1/skus/{id}",
            UPDATE,
            "update",
            "LegacySkuUpdateParams",
            s,
            ORDERS_UNTIL,
            target_param="id",
        ),
        mk(
            "DELETE",
            "/v1/skus/{id}",
            DELETE,
            "delete",
            "LegacyDeleteParams",
            s,
            ORDERS_UNTIL,
            target_param="id",
        ),
        mk(
            "POST",
            "/v1/3d_secure",
            CREATE,
            "create",
            "LegacyThreeDSecureCreateParams",
            ("three_d_secure",),
            ORDERS_UNTIL,
        ),
        mk(
            "GET",
            "/v1/3d_secure/{id}",
            RETRIEVE,
            "retrieve",
            "LegacyRetrieveParams",
            ("three_d_secure",),
            ORDERS_UNTIL,
            target_param="id",
        ),
        mk(
            "POST",
            "/v1/subscription_items/{subscription_item}/usage_records",
            CREATE,
            "create",
            "LegacyUsageRecordCreateParams",
            ("usage_record",),
            BASIL,
            parent_param="subscription_item",
            parent_types=("subscription_item",),
            list_template="/v1/subscription_items/{subscription_item}/usage_records",
        ),
        mk(
            "GET",
            "/v1/subscription_items/{subscription_item}/usage_record_summaries",
            LIST,
            "list",
            "LegacyUsageRecordSummaryListParams",
            ("usage_record_summary",),
            BASIL,
            parent_param="subscription_item",
            parent_types=("subscription_item",),
            list_template="/v1/subscription_items/{subscription_item}/usage_record_summaries",
            handler=_usage_summaries,
        ),
        mk(
            "GET",
            "/v1/invoices/upcoming",
            "static_action",
            "upcoming",
            None,
            ("invoice",),
            BASIL,
            handler=_upcoming,
        ),
        mk(
            "GET",
            "/v1/invoices/upcoming/lines",
            LIST,
            "upcoming_lines",
            None,
            ("line_item",),
            BASIL,
            handler=_upcoming_lines,
        ),
    ]
    return out


# ---- behaviours ----------------------------------------------------------------------------------

order = behaviour("order", consumes={"items", "coupon"})


@order.on_create
def _order_create(call: Call, obj: dict[str, Any]) -> None:
    em = call.em
    items = []
    total = 0
    for spec in call.param("items") or []:
        amount = int(spec.get("amount") or 0)
        sku_id = spec.get("parent")
        qty = int(spec.get("quantity") or 1)
        desc = spec.get("description") or ""
        if sku_id and spec.get("type", "sku") == "sku":
            sku = em.get("sku", sku_id)
            if sku is None:
                raise StripeError.missing("sku", sku_id, param="items[0][parent]")
            amount = int(sku.obj.get("price") or 0) * qty
            prod = em.get("product", str(sku.obj.get("product") or ""))
            desc = desc or (prod.obj.get("name") if prod else "") or sku_id
        items.append(
            {
                "object": "order_item",
                "amount": amount,
                "currency": obj.get("currency", "usd"),
                "description": desc,
                "parent": sku_id,
                "quantity": qty,
                "type": spec.get("type", "sku"),
            }
        )
        total += amount
    obj.update(items=items, amount=total, status="created", updated=obj["created"])
    obj["returns"] = {
        "object": "list",
        "data": [],
        "has_more": False,
        "total_count": 0,
        "url": f"/v1/order_returns?order={obj['id']}",
    }


@order.action("pay")
def _order_pay(call: Call, rec: Record) -> Any:
    em = call.em
    if rec.obj.get("status") != "created":
        raise StripeError.invalid("This order cannot be paid: it is not in the created state.")
    before = rec.copy()
    ch = em.new_object(
        "charge",
        amount=rec.obj["amount"],
        currency=rec.obj["currency"],
        customer=call.param("customer") or rec.obj.get("customer"),
        status="succeeded",
        paid=True,
        captured=True,
        amount_captured=rec.obj["amount"],
    )
    chrec = em.insert("charge", ch)
    em.emit_for(call, chrec, "succeeded")
    rec.obj.update(status="paid", charge=chrec.id, updated=call.now)
    rec.obj["status_transitions"]["paid"] = call.now
    prev = em.changed(call, rec, before, event=None)
    em.emit_for(call, rec, "payment_succeeded")
    if prev:
        em.emit_for(call, rec, "updated", previous=prev)
    return rec


@order.action("return_order")
def _order_return(call: Call, rec: Record) -> Any:
    em = call.em
    before = rec.copy()
    items = call.param("items") or [i for i in rec.obj["items"] if i.get("type") == "sku"]
    amount = sum(int(i.get("amount") or 0) for i in items)
    ret = em.new_object(
        "order_return",
        amount=amount,
        currency=rec.obj["currency"],
        items=[{"object": "order_item", **i} for i in items],
        order=rec.id,
    )
    rrec = em.insert("order_return", ret)
    em.emit_for(call, rrec, "created")
    rec.obj["amount_returned"] = int(rec.obj.get("amount_returned") or 0) + amount
    rec.obj["status"] = "returned"
    rec.obj["status_transitions"]["returned"] = call.now
    rets = rec.obj["returns"]
    rets["data"].insert(0, rrec.copy())
    rets["total_count"] = len(rets["data"])
    em.changed(call, rec, before)
    return rrec


@behaviour("sku", custom_id=True, defaults={"active": True, "attributes": {}}).on_create
def _sku_create(call: Call, obj: dict[str, Any]) -> None:
    if call.em.get("product", str(obj.get("product") or "")) is None:
        raise StripeError.missing("product", str(obj.get("product")), param="product")
    obj["updated"] = obj["created"]


@behaviour("three_d_secure").on_create
def _tds_create(call: Call, obj: dict[str, Any]) -> None:
    from stripesync.emulator.behaviours import make_card

    em = call.em
    card_id = call.param("card")
    card = em.find(card_id, ["card"]) if card_id else None
    obj["card"] = card.copy() if card is not None else make_card(em, "tok_visa")
    obj["authenticated"] = False
    obj["status"] = "redirect_pending"
    obj["redirect_url"] = f"https://hooks.stripe.com/3d_secure/authenticate/{obj['id']}"


@behaviour("usage_record").on_create
def _usage_record_create(call: Call, obj: dict[str, Any]) -> None:
    ts = call.param("timestamp")
    obj["timestamp"] = call.now if ts in (None, "now") else int(ts)
    obj["subscription_item"] = call.pp("subscription_item")
    if call.param("action") == "set":
        path = f"/v1/subscription_items/{obj['subscription_item']}/usage_records"
        ix = call.em.store.path_index.get(path)
        for r in list(ix.records()) if ix is not None else []:
            call.em.store.remove(r, tombstone=False)


def _usage_summaries(call: Call) -> Any:
    from stripesync.emulator.lists import list_bytes
    from stripesync.emulator.store import Index

    em = call.em
    si_id = call.pp("subscription_item")
    si = em.get("subscription_item", si_id)
    if si is None:
        raise StripeError.missing("subscription_item", si_id, param=None)
    key = f"/v1/subscription_items/{si_id}/usage_record_summaries"
    loaded = em.store.path_index.get(key)
    if loaded is not None and len(loaded):
        # summaries given to POST /_emulator/load are served as given
        return list_bytes(em, call, loaded, key, ["usage_record_summary"])
    path = f"/v1/subscription_items/{si_id}/usage_records"
    ix = em.store.path_index.get(path)
    total = sum(int(r.obj.get("quantity") or 0) for r in (ix.records() if ix is not None else []))
    summary = em.store.singletons.get(key)
    obj = {
        "id": summary.id if summary is not None else em.ids.new("usage_record_summary"),
        "object": "usage_record_summary",
        "invoice": None,
        "livemode": False,
        "period": usage_period(em, si.obj),
        "subscription_item": si_id,
        "total_usage": total,
    }
    from stripesync.emulator.store import Record

    rec = Record("usage_record_summary", obj["id"], 0, em.store.next_seq(), obj)
    em.store.singletons[key] = rec
    index = Index()
    index.add(rec)
    return list_bytes(em, call, index, key, ["usage_record_summary"])


def usage_period(em: Emulator, si: dict[str, Any]) -> dict[str, int | None]:
    """The current period a usage summary covers: the item's (basil and later), else its
    subscription's (older API versions kept it there); `start` never after `end`."""
    start, end = si.get("current_period_start"), si.get("current_period_end")
    if not isinstance(start, int) or not isinstance(end, int):
        sub = em.get("subscription", str(si.get("subscription") or ""))
        if sub is not None:
            start = sub.obj.get("current_period_start", start)
            end = sub.obj.get("current_period_end", end)
    if not isinstance(start, int) or not isinstance(end, int):
        return {"start": start if isinstance(start, int) else None, "end": None}
    return {"start": min(start, end), "end": max(start, end)}


def _upcoming(call: Call) -> Any:
    from stripesync.emulator.behaviours import preview_invoice

    return preview_invoice(call, all_subscriptions=True)


def _upcoming_lines(call: Call) -> Any:
    from stripesync.emulator.behaviours import preview_invoice
    from stripesync.emulator.store import dumps

    inv = preview_invoice(call, all_subscriptions=True)
    limit = int(call.param("limit") or 10)
    lines = inv["lines"]["data"]
    after = call.param("starting_after")
    if after:
        ids = [x["id"] for x in lines]
        lines = lines[ids.index(after) + 1 :] if after in ids else []
    return dumps(
        {
            "object": "list",
            "data": lines[:limit],
            "has_more": len(lines) > limit,
            "url": "/v1/invoices/upcoming/lines",
        }
    )
