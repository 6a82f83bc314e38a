"""The product catalog: products, prices, plans, coupons and promotion codes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stripesync.emulator.behaviours.common import _price_defaults, price_from_data, require_ref
from stripesync.emulator.errors import StripeError
from stripesync.emulator.registry import behaviour

if TYPE_CHECKING:
    from stripesync.emulator.engine import Call
    from stripesync.emulator.store import Record

product = behaviour(
    "product",
    custom_id=True,
    consumes={"default_price_data"},
    defaults={"active": True, "images": [], "marketing_features": [], "type": "service"},
)


@product.on_create
def _product_create(call: Call, obj: dict[str, Any]) -> None:
    obj["updated"] = obj.get("created", call.now)
    data = call.param("default_price_data")
    if isinstance(data, dict):
        price = price_from_data(call, {**data, "product": obj["id"]})
        rec = call.em.get("price", price["id"])
        if rec is not None:
            rec.obj["active"] = True
            rec.touch()
            call.em.emit_for(call, rec, "created")
        obj["default_price"] = price["id"]


@product.on_delete
def _product_delete(call: Call, rec: Record) -> None:
    em = call.em
    # a plan made with the Plans API is a price too
    for p in (*em.store.objects("price").values(), *em.store.objects("plan").values()):
        if p.obj.get("product") == rec.id:
            raise StripeError.invalid(
                "This product cannot be deleted because it has one or more user-created prices."
            )


price = behaviour("price", consumes={"product_data"}, defaults={"active": True})


@price.on_create
def _price_create(call: Call, obj: dict[str, Any]) -> None:
    data = call.param("product_data")
    if isinstance(data, dict):
        prod = call.em.new_object("product")
        call.em.apply_params("Product", prod, data)
        prod["updated"] = prod["created"]
        rec = call.em.insert("product", prod)
        call.em.emit_for(call, rec, "created")
        obj["product"] = prod["id"]
    elif obj.get("product"):
        require_ref(call, "product", obj["product"], "product")
    else:
        raise StripeError.invalid(
            "You must specify either `product` or `product_data` when creating a price.",
            param="product",
        )
    _price_defaults(obj)


@price.list_filter("type")
def _price_type(call: Call, v: Any) -> Any:
    return lambda o: o.get("type") == v


plan = behaviour("plan", custom_id=True, consumes={"product"}, defaults={"active": True})


@plan.on_create
def _plan_create(call: Call, obj: dict[str, Any]) -> None:
    em = call.em
    prod = call.param("product")
    if isinstance(prod, dict):
        p = em.new_object("product")
        em.apply_params("Product", p, prod)
        p["updated"] = p["created"]
        rec = em.insert("product", p)
        em.emit_for(call, rec, "created")
        obj["product"] = p["id"]
    elif isinstance(prod, str):
        require_ref(call, "product", prod, "product")
        obj["product"] = prod
    if not obj.get("interval_count"):
        obj["interval_count"] = 1
    if obj.get("amount") is not None and obj.get("amount_decimal") is None:
        obj["amount_decimal"] = str(obj["amount"])


coupon = behaviour(
    "coupon",
    custom_id=True,
    defaults={"valid": True, "times_redeemed": 0, "duration": "once"},
)


@coupon.on_create
def _coupon_create(call: Call, obj: dict[str, Any]) -> None:
    if obj.get("percent_off") is None and obj.get("amount_off") is None:
        raise StripeError.invalid("Must provide either `amount_off` or `percent_off`.")


behaviour("promotion_code", defaults={"active": True, "times_redeemed": 0})


@behaviour("promotion_code").on_create
def _promo_create(call: Call, obj: dict[str, Any]) -> None:
    if not obj.get("code"):
        obj["code"] = call.em.ids.token(8).upper()
