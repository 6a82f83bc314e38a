"""`POST /_emulator/load`: Stripe objects exactly as Stripe returns them (any
collection, any API version's shape) served back unchanged by list and retrieve.
Lists embedded in an object (an invoice's `lines`, an account's `external_accounts`,
a subscription's `items`) become reachable at their own paths."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stripesync.emulator.engine import ref_id
from stripesync.emulator.routes import SINGLETON_GET, Route
from stripesync.emulator.store import Record

if TYPE_CHECKING:
    from stripesync.emulator.engine import Emulator


class LoadError(ValueError):
    pass


def load_objects(em: Emulator, objects: list[Any], *, events: bool = False) -> dict[str, int]:
    if not isinstance(objects, list):
        raise LoadError("expected a JSON array of Stripe objects")
    counts: dict[str, int] = {}
    singleton_paths = {
        r.types[0]: r.template for r in em.routes if r.kind == SINGLETON_GET and r.types
    }
    call = em.internal_call()
    for i, obj in enumerate(objects):
        if not isinstance(obj, dict) or not isinstance(obj.get("object"), str):
            raise LoadError(f"item {i}: not a Stripe object (no `object` field)")
        rec = _load_one(em, obj, singleton_paths, counts)
        if events and rec is not None and obj.get("object") != "event":
            created = obj.get("created")
            em.emit_for(call, rec, "created", at=created if isinstance(created, int) else None)
    return counts


def _load_one(
    em: Emulator, obj: dict[str, Any], singletons: dict[str, str], counts: dict[str, int]
) -> Record | None:
    obj_type: str = obj["object"]
    oid = obj.get("id")
    counts[obj_type] = counts.get(obj_type, 0) + 1
    if not isinstance(oid, str) or not oid:
        path = _singleton_path(em, obj, singletons.get(obj_type))
        if path is None:
            raise LoadError(f"a {obj_type} without an id can't be loaded")
        em.store.singletons[path] = Record(obj_type, path, 0, em.store.next_seq(), obj)
        return None
    if obj.get("deleted") is True:
        created = obj.get("created")
        rec = Record(
            obj_type, oid, created if isinstance(created, int) else 0, em.store.next_seq(), obj
        )
        old = em.store.get(obj_type, oid)
        if old is not None:
            em.store.remove(old)
        em.store.deleted.setdefault(obj_type, {})[oid] = rec
        return None
    rec = em.insert(obj_type, obj, prune=False)
    for name, value in obj.items():
        route = (
            _singleton_route(em, singletons.get(value["object"]))
            if isinstance(value, dict)
            and not value.get("id")
            and isinstance(value.get("object"), str)
            else None
        )
        if (
            route is not None
            and route.parent_param
            and rec.type in route.parent_types
            and route.segments[-1] == name
        ):
            # a singleton embedded in its parent (a financial account's `features`)
            path = route.fill(route.template, {route.parent_param: oid})
            em.store.singletons[path] = Record(value["object"], path, 0, em.store.next_seq(), value)
            counts[value["object"]] = counts.get(value["object"], 0) + 1
            continue
        if (
            isinstance(value, dict)
            and value.get("object") == "list"
            and isinstance(value.get("data"), list)
            and isinstance(value.get("url"), str)
        ):
            _load_embedded(em, value, singletons, counts)
    return rec


def _load_embedded(
    em: Emulator, lst: dict[str, Any], singletons: dict[str, str], counts: dict[str, int]
) -> None:
    url: str = lst["url"]
    for item in lst["data"]:
        if not isinstance(item, dict) or not isinstance(item.get("object"), str):
            continue
        oid = item.get("id")
        if not isinstance(oid, str):
            continue
        rec = em.store.get(item["object"], oid)
        if rec is None:
            rec = _load_one(em, item, singletons, counts)
        if rec is not None:
            em.store.add_to_list(url, rec)


def _singleton_path(em: Emulator, obj: dict[str, Any], template: str | None) -> str | None:
    """Where a singleton is read: its route's path, with the parent (a cash balance's
    `customer`) taken from the object."""
    if template is None or "{" not in template:
        return template
    route = _singleton_route(em, template)
    if route is None or not route.parent_param or not route.parent_types:
        return None
    fld = em.parent_field_by_type(obj["object"], route.parent_types[0])
    parent = ref_id(obj.get(fld)) if fld else None
    if parent is None:
        return None
    return route.fill(template, {route.parent_param: parent})


def _singleton_route(em: Emulator, template: str | None) -> Route | None:
    if template is None:
        return None
    return next((r for r in em.routes if r.kind == SINGLETON_GET and r.template == template), None)
