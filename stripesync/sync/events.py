"""Applying Stripe events to the database (the live sync's core, without the poller).

Rules:

- The collection of an event is the one its `data.object.object` belongs to (with the
  parent the event names: `customer.source.*` objects of type `bank_account` go to
  bank_account, `source.mandate_notification` to source_mandate_notification).
- Events are applied oldest first. Each copy carries the event's `created` as its
  `_stripe_time`, so an older state never replaces a newer one; when several events of
  one batch touch one object within the same second (Stripe does not order events within
  a second), the object is re-fetched instead, as it is when the event was rendered in
  another API version than the pinned one or carries truncated nested lists.
- `*.deleted` events of collections whose end is a deletion remove the row and its
  children's rows and leave a tombstone; objects whose end is a status (a canceled
  subscription) are stored with that status.
- A parent that embeds a complete list of its children (a subscription's `items`, an
  invoice's `lines`) says which children it has: children it no longer lists are gone
  (an item removed from a subscription is deleted at Stripe, with no event of its own),
  so their rows go, with a tombstone at the parent's time. A refetched parent does the
  same; an object refetched for several events in one second leaves that to its fresh
  copy (its events' order is unknown).
- Changes Stripe announces through no event of their own are fetched: an
  `invoice.finalized` refetches its customer (its `next_invoice_sequence` moved when the
  invoice took its number) and `invoice.created` / `invoice.updated` the invoice items
  on the invoice's lines (`invoiceitem.updated` was removed from the API in 2023).
- Every event is stored in the `event` table; ids already there are skipped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stripesync.catalog import Catalog, Collection, build_catalog
from stripesync.catalog.objects import embedded_children, parent_id
from stripesync.store import Incoming, Store
from stripesync.store.store import Conn
from stripesync.stripe_api.client import PINNED_VERSION


@dataclass(frozen=True, slots=True)
class Refetch:
    """An object to fetch again at the pinned version before storing it."""

    collection: str
    id: str
    parent_id: str | None


@dataclass(frozen=True, slots=True)
class ChildList:
    """A parent's complete embedded list of one child collection, as of `when`."""

    ids: frozenset[str]
    when: float
    event_id: str | None


@dataclass(slots=True)
class Plan:
    """What a batch of events does to the database."""

    upserts: dict[str, list[Incoming]] = field(default_factory=lambda: defaultdict(list))
    deletes: dict[str, list[tuple[str, float, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    refetch: dict[tuple[str, str], Refetch] = field(default_factory=dict)
    # (child collection, parent id) -> the newest complete list of the parent's children
    child_lists: dict[tuple[str, str], ChildList] = field(default_factory=dict)
    events: list[Incoming] = field(default_factory=list)
    touched_customers: set[str] = field(default_factory=set)
    touched_subscriptions: set[str] = field(default_factory=set)
    skipped: list[str] = field(default_factory=list)  # event ids of objects we do not keep
    # refetched invoices whose events take on invoice items but embed a truncated list of
    # lines: their lines are listed in full and the items on them fetched
    follow_lines: set[str] = field(default_factory=set)


def collection_of(catalog: Catalog, event: dict[str, Any]) -> Collection | None:
    obj = event.get("data", {}).get("object", {})
    etype = str(event.get("type", ""))
    for c in catalog:
        if etype in c.read.event_types:
            return c
    kind = obj.get("object")
    if not isinstance(kind, str):
        return None
    if etype.startswith(("customer.source.", "account.external_account.")):
        for c in catalog:
            if kind in c.objects and etype in c.events:
                return c
    return catalog.for_object(kind)


# invoice events after which the invoice may hold invoice items it took on without an
# event of theirs (pending items pulled in, items added to a draft)
TAKES_ITEMS = ("invoice.created", "invoice.updated")


def _truncated(obj: dict[str, Any]) -> bool:
    for v in obj.values():
        if isinstance(v, dict) and v.get("object") == "list" and v.get("has_more"):
            return True
    return False


def plan_events(
    events: Sequence[dict[str, Any]],
    *,
    catalog: Catalog | None = None,
    pinned_version: str = PINNED_VERSION,
) -> Plan:
    """Decide what to write for a batch of events given oldest first."""
    catalog = catalog or build_catalog()
    plan = Plan()
    seconds: dict[tuple[str, str], list[int]] = defaultdict(list)
    for ev in events:
        plan.events.append(Incoming(ev, stripe_time=float(ev["created"]), event_id=ev["id"]))
        obj = ev.get("data", {}).get("object") or {}
        c = collection_of(catalog, ev)
        oid = obj.get("id")
        if c is None or not isinstance(oid, str):
            plan.skipped.append(ev["id"])
            _touch(plan, obj)
            continue
        _touch(plan, obj)
        seconds[(c.name, oid)].append(int(ev["created"]))
        parent = parent_id(c, obj)
        when = float(ev["created"])
        if ev["type"] in c.delete_events:
            plan.deletes[c.name].append((oid, when, ev["id"]))
            plan.refetch.pop((c.name, oid), None)
            continue
        stale = ev.get("api_version") not in (None, pinned_version) or _truncated(obj)
        if stale:
            plan.refetch[(c.name, oid)] = Refetch(c.name, oid, parent)
        if ev["type"] in TAKES_ITEMS and _truncated(obj):
            plan.follow_lines.add(oid)
        add_object(plan, catalog, c, obj, when=when, parent=parent, event_id=ev["id"])
    for ev in events:
        for name, oid in _moved_without_event(ev):
            gone = any(d[0] == oid for d in plan.deletes.get(name, []))
            if name in catalog and not gone:
                plan.refetch.setdefault((name, oid), Refetch(name, oid, None))
    # several events of one object in one second: their order is unknown, fetch it
    for (name, oid), secs in seconds.items():
        deleted = any(d[0] == oid for d in plan.deletes.get(name, []))
        if len(secs) != len(set(secs)) and not deleted and (name, oid) not in plan.refetch:
            parent = next((u.parent_id for u in plan.upserts.get(name, []) if _id(u) == oid), None)
            plan.refetch[(name, oid)] = Refetch(name, oid, parent)
    # a refetched parent's fresh copy says which children it has
    for child_name, pid in list(plan.child_lists):
        parent_name = catalog[child_name].read.parent
        if parent_name is not None and (parent_name, pid) in plan.refetch:
            del plan.child_lists[(child_name, pid)]
    return plan


def add_object(
    plan: Plan,
    catalog: Catalog,
    c: Collection,
    obj: dict[str, Any],
    *,
    when: float,
    parent: str | None,
    event_id: str | None,
    listed: Mapping[str, list[dict[str, Any]]] | None = None,
) -> None:
    """Plan the upsert of one object as of `when`, with the children it embeds in
    complete lists (or `listed`, by child collection: a truncated list read in full),
    and the removal of the children those lists leave out."""
    oid = obj.get(c.key)
    plan.upserts[c.name].append(
        Incoming(obj, stripe_time=when, parent_id=parent, event_id=event_id)
    )
    if not isinstance(oid, str):
        return
    for child in catalog.children_of(c.name):
        items = (listed or {}).get(child.name)
        if items is None:
            items = embedded_children(obj, child)
        if items is None:
            continue
        plan.upserts[child.name].extend(
            Incoming(o, stripe_time=when, parent_id=oid, event_id=event_id) for o in items
        )
        known = plan.child_lists.get((child.name, oid))
        if known is None or known.when <= when:  # ties: the later event
            ids = frozenset(str(o[child.key]) for o in items if o.get(child.key))
            plan.child_lists[(child.name, oid)] = ChildList(ids, when, event_id)


def _moved_without_event(ev: dict[str, Any]) -> list[tuple[str, str]]:
    """Objects an event's change moves though Stripe sends no event for them: an invoice
    that takes its number advances its customer's `next_invoice_sequence`, and an
    invoice takes pending invoice items (which have no update event) onto itself."""
    if not str(ev.get("type", "")).startswith("invoice."):
        return []
    obj = ev.get("data", {}).get("object") or {}
    out: list[tuple[str, str]] = []
    cust = obj.get("customer")
    if ev.get("type") == "invoice.finalized" and isinstance(cust, str):
        out.append(("customer", cust))
    lines = obj.get("lines")
    if ev.get("type") in TAKES_ITEMS and isinstance(lines, dict):
        out += [("invoiceitem", item) for item in items_on_lines(lines.get("data", []))]
    return out


def items_on_lines(lines: Sequence[dict[str, Any]]) -> list[str]:
    """The invoice items an invoice's lines were made from."""
    out: list[str] = []
    for line in lines:
        parent = line.get("parent") or {}
        details = parent.get("invoice_item_details") or {}
        item = details.get("invoice_item") or line.get("invoice_item")
        if isinstance(item, str):
            out.append(item)
    return out


def _id(i: Incoming) -> str | None:
    return i.obj.get("id") if isinstance(i.obj, dict) else None  # type: ignore[return-value]


def _touch(plan: Plan, obj: dict[str, Any]) -> None:
    """Remember which customers and subscriptions may have a new upcoming invoice."""
    kind = obj.get("object")
    if kind == "customer" and isinstance(obj.get("id"), str):
        plan.touched_customers.add(obj["id"])
    cust = obj.get("customer")
    if isinstance(cust, str):
        plan.touched_customers.add(cust)
    if kind == "subscription" and isinstance(obj.get("id"), str):
        plan.touched_subscriptions.add(obj["id"])
    sub = obj.get("subscription")
    if isinstance(sub, str):
        plan.touched_subscriptions.add(sub)


async def apply_plan(
    conn: Conn, store: Store, plan: Plan, *, catalog: Catalog | None = None
) -> int:
    """Write a plan in the caller's transaction; returns the rows written."""
    catalog = catalog or build_catalog()
    written = 0
    if plan.events and "event" in catalog:
        written += (await store.upsert(conn, catalog["event"], plan.events)).written
    for name, items in plan.upserts.items():
        written += (await store.upsert(conn, catalog[name], items)).written
    for (child_name, pid), listed in plan.child_lists.items():
        written += await store.delete_unlisted_children(
            conn,
            catalog[child_name],
            pid,
            listed.ids,
            as_of=listed.when,
            event_id=listed.event_id,
            children=catalog.children_of(child_name),
        )
    for name, dels in plan.deletes.items():
        c = catalog[name]
        for oid, when, event_id in dels:
            written += await store.delete(
                conn,
                c,
                [oid],
                deleted_at=when,
                event_id=event_id,
                children=catalog.children_of(name),
            )
    return written
