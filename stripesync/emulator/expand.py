"""`expand[]`: replace ids by the objects they name, up to four levels deep;
includable lists (a customer's `sources`, `tax_ids`, a checkout session's
`line_items`) rendered as list objects."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stripesync.emulator.errors import StripeError
from stripesync.emulator.store import Index

if TYPE_CHECKING:
    from stripesync.emulator.engine import Emulator

MAX_DEPTH = 4


def expand_object(em: Emulator, obj: dict[str, Any], paths: list[str]) -> None:
    tree: dict[str, Any] = {}
    for path in paths:
        parts = path.split(".")
        if len(parts) > MAX_DEPTH:
            raise StripeError.invalid(
                f"You cannot expand more than {MAX_DEPTH} levels of a property. Property: {path}",
                param="expand",
            )
        node = tree
        for p in parts:
            node = node.setdefault(p, {})
    _apply(em, obj, tree, "")


def _cls_of_obj(em: Emulator, obj: dict[str, Any]) -> str:
    t = obj.get("object")
    return em.shapes.type_class.get(t, "") if isinstance(t, str) else ""


def _apply(em: Emulator, obj: dict[str, Any], tree: dict[str, Any], prefix: str) -> None:
    cls = _cls_of_obj(em, obj)
    fields = em.shapes.fields(cls)
    for name, sub in tree.items():
        full = f"{prefix}{name}"
        d = fields.get(name)
        value = obj.get(name)
        if d is None and name not in obj:
            raise StripeError.invalid(f"This property cannot be expanded ({full}).", param="expand")
        t = d.get("t") if d else None
        if value is None:
            if t == "listobject" and obj.get("id"):
                obj[name] = _includable(em, obj, name, d)
                value = obj[name]
            elif t == "class" and d is not None and "." in d["name"] and name not in obj:
                # a nested object Stripe sends only when expanded (`customer.tax`)
                obj[name] = value = em.shapes.new(d["name"])
            elif t == "class" and obj.get("id") and (obj.get("object"), name) in em.included:
                # an object of its own Stripe includes when asked (`customer.cash_balance`)
                route = em.included[(obj["object"], name)]
                obj[name] = value = em.included_singleton(route, obj["id"])
            elif d is not None and t not in ("expandable", "class", "listobject", "union"):
                raise StripeError.invalid(
                    f"This property cannot be expanded ({full}).", param="expand"
                )
            else:
                continue
        if isinstance(value, str):
            if d is not None and t not in ("expandable",) and not _is_expandable_union(d):
                raise StripeError.invalid(
                    f"This property cannot be expanded ({full}).", param="expand"
                )
            target = _resolve(em, value, d)
            if target is None:
                continue
            obj[name] = value = target
        if isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, str):
                    target = _resolve(em, item, d.get("of") if d else None)
                    if target is not None:
                        value[i] = item = target
                if sub and isinstance(item, dict):
                    _apply(em, item, sub, f"{full}.")
            continue
        if isinstance(value, dict) and sub:
            if value.get("object") == "list" and "data" in value:
                inner = sub.get("data", sub)
                for item in value["data"]:
                    if isinstance(item, dict):
                        _apply(em, item, inner, f"{full}.data.")
            else:
                _apply(em, value, sub, f"{full}.")
        elif not isinstance(value, dict) and sub:
            raise StripeError.invalid(f"This property cannot be expanded ({full}).", param="expand")


def _is_expandable_union(d: dict[str, Any]) -> bool:
    return d.get("t") == "union" and any(o.get("t") == "expandable" for o in d["of"])


def _resolve(em: Emulator, oid: str, d: dict[str, Any] | None) -> dict[str, Any] | None:
    types = em.shapes.types_of(d) if d else []
    rec = em.store.find_any(oid, types) if types else None
    if rec is None:
        rec = em.store.find_any(oid)
    if rec is None:
        for t in types:
            dead = em.store.get_deleted(t, oid)
            if dead is not None:
                return {"id": oid, "object": dead.obj.get("object", t), "deleted": True}
        return None
    return rec.copy()


def _includable(em: Emulator, obj: dict[str, Any], name: str, d: dict[str, Any]) -> dict[str, Any]:
    """A list field Stripe leaves out unless expanded (customer `sources`, `tax_ids`,
    `subscriptions`; checkout session `line_items`)."""
    obj_type = obj.get("object", "")
    oid = obj["id"]
    route = em.includable.get((obj_type, name))
    recs = []
    url = ""
    if route is not None and route.list_template and route.parent_param:
        url = route.fill(route.list_template, {route.parent_param: oid})
        index = em.store.path_index.get(url) or Index()
        recs = list(_take(index, 11))
    else:
        child_types = em.shapes.types_of(d)
        if child_types:
            child = child_types[0]
            fld = em.parent_field_by_type(child, obj_type)
            url = f"/v1/{child}s?{fld}={oid}" if fld else ""
            if fld:
                for r in em.store.index(child).records():
                    v = r.obj.get(fld)
                    if v == oid or (isinstance(v, dict) and v.get("id") == oid):
                        recs.append(r)
                        if len(recs) > 10:
                            break
    return {
        "object": "list",
        "data": [r.copy() for r in recs[:10]],
        "has_more": len(recs) > 10,
        "total_count": len(recs),
        "url": url,
    }


def _take(index: Index, n: int) -> list[Any]:
    out = []
    for r in index.records():
        out.append(r)
        if len(out) >= n:
            break
    return out
