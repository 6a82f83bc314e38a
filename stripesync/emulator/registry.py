"""The per-collection behaviour registry: one `Behaviour` per object type, holding the
hooks that give that collection Stripe's semantics beyond the generic engine.

Hooks take a `Call` (the request being served, with the emulator) and the object.
A collection without hooks is served purely from the SDK's description.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stripesync.emulator.engine import Call
    from stripesync.emulator.store import Record

CreateHook = Callable[["Call", dict[str, Any]], None]
AfterHook = Callable[["Call", "Record"], None]
UpdateHook = Callable[["Call", "Record", dict[str, Any]], None]
DeleteHook = Callable[["Call", "Record"], None]
ActionHook = Callable[["Call", "Record"], Any]
FilterFactory = Callable[["Call", Any], Callable[[dict[str, Any]], bool]]
EndpointHook = Callable[["Call"], Any]


@dataclass
class Behaviour:
    obj_type: str
    defaults: dict[str, Any] = field(default_factory=dict)
    consumes: set[str] = field(default_factory=set)  # params the hooks apply themselves
    custom_id: bool = False  # `id` may be given on create (products, plans, coupons)
    retrieve_deleted: bool = False  # a deleted object retrieves as {id, object, deleted}
    event_prefix: Callable[[dict[str, Any]], str | None] | str | None = None
    # the `created` event follows the after-create hook, so it shows what the hook added
    # (an invoice's lines for the pending invoice items it took on)
    created_event_after_hook: bool = False
    create: CreateHook | None = None
    created: AfterHook | None = None
    update: UpdateHook | None = None
    delete: DeleteHook | None = None
    actions: dict[str, ActionHook] = field(default_factory=dict)
    filters: dict[str, FilterFactory] = field(default_factory=dict)
    default_filter: (
        Callable[[Call, dict[str, Any]], Callable[[dict[str, Any]], bool] | None] | None
    ) = None

    # decorators -----------------------------------------------------------------------
    def on_create(self, fn: CreateHook) -> CreateHook:
        self.create = fn
        return fn

    def after_create(self, fn: AfterHook) -> AfterHook:
        self.created = fn
        return fn

    def on_update(self, fn: UpdateHook) -> UpdateHook:
        self.update = fn
        return fn

    def on_delete(self, fn: DeleteHook) -> DeleteHook:
        self.delete = fn
        return fn

    def action(self, name: str) -> Callable[[ActionHook], ActionHook]:
        def deco(fn: ActionHook) -> ActionHook:
            self.actions[name] = fn
            return fn

        return deco

    def list_filter(self, name: str) -> Callable[[FilterFactory], FilterFactory]:
        def deco(fn: FilterFactory) -> FilterFactory:
            self.filters[name] = fn
            return fn

        return deco


BEHAVIOURS: dict[str, Behaviour] = {}

# Top-level list filters kept as indexes (`/v1/subscriptions?customer=cus_1`), so that
# per-customer lists stay fast with a million objects.
INDEXED_FILTERS: dict[str, tuple[str, ...]] = {
    "subscription": ("customer",),
    "invoice": ("customer",),
    "invoice_payment": ("invoice",),
    "invoiceitem": ("customer",),
    "charge": ("customer", "payment_intent"),
    "payment_intent": ("customer",),
    "payment_method": ("customer",),
    "subscription_item": ("subscription",),
    "refund": ("charge",),
    "dispute": ("charge",),
    "checkout.session": ("customer",),
    "credit_note": ("customer", "invoice"),
    "quote": ("customer",),
    "setup_intent": ("customer",),
    "subscription_schedule": ("customer",),
}
ENDPOINTS: dict[tuple[str, str], EndpointHook] = {}  # (verb, normalised path) -> hook


def behaviour(obj_type: str, **kwargs: Any) -> Behaviour:
    b = BEHAVIOURS.get(obj_type)
    if b is None:
        b = BEHAVIOURS[obj_type] = Behaviour(obj_type)
    for k, v in kwargs.items():
        setattr(b, k, v)
    return b


def endpoint(verb: str, template: str) -> Callable[[EndpointHook], EndpointHook]:
    """A hand-written endpoint (replaces the generic handling of that route)."""
    from stripesync.emulator.routes import norm

    def deco(fn: EndpointHook) -> EndpointHook:
        ENDPOINTS[(verb, norm(template))] = fn
        return fn

    return deco


_EMPTY = Behaviour("")


def get(obj_type: str) -> Behaviour:
    return BEHAVIOURS.get(obj_type, _EMPTY)
