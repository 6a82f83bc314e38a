"""Reading catalog facts off Stripe objects: which parent an object hangs below, and the
child lists it embeds. Shared by the live sync and the proxy's writes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stripesync.catalog.entries import build_catalog, embedded_field
from stripesync.catalog.model import Collection

# Fields that name a nested object's parent, after the collection's own path parameters.
PARENT_FIELDS = ("customer", "account", "fee", "invoice", "subscription", "charge")


def parent_id(collection: Collection, obj: Mapping[str, Any]) -> str | None:
    """The id of the parent row of a nested object (None for a top-level one)."""
    reads = collection.reads
    if not any(r.parent for r in reads):
        return None
    # a path parameter named `id` is the parent's id in the path, not a field of the child
    own = [r.parent_param for r in reads if r.parent_param and r.parent_param != "id"]
    fields = [*own, *PARENT_FIELDS]
    for f in fields:
        v = obj.get(f)
        if isinstance(v, str) and v:
            return v
        if isinstance(v, dict) and isinstance(v.get("id"), str):
            return str(v["id"])
    return None


def embedded_children(obj: Mapping[str, Any], child: Collection) -> list[dict[str, Any]] | None:
    """The child objects a parent embeds when its list is complete (a subscription's
    `items`, an invoice's `lines`); None when it embeds no complete list."""
    name = embedded_field(child.name) if child.name in build_catalog() else None
    v = obj.get(name) if name else None
    if isinstance(v, dict) and v.get("object") == "list" and not v.get("has_more"):
        return [o for o in v.get("data", []) if o.get("object") in child.objects]
    return None
