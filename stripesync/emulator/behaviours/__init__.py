"""Per-collection semantics the generic engine cannot derive from the SDK's types.

Each module covers one area and registers its collections' hooks in `registry` when
imported (importing this package registers them all): what a create fills in, what an
update or delete sets off (a subscription makes items and an invoice with lines;
deleting a customer cancels its subscriptions; a refund moves its charge's
`amount_refunded`), which events fire, and the list filters that are not a plain field
comparison. The helpers other modules of the emulator use are re-exported here.
"""

from stripesync.emulator.behaviours import (  # noqa: F401  (registers the hooks)
    checkout,
    common,
    connect,
    customers,
    derived,
    invoices,
    payments,
    products,
    rest,
    subscriptions,
)
from stripesync.emulator.behaviours.common import (
    EVENT_TYPES,
    card_payment_details,
    embedded_list,
    line_pricing,
    make_bank_account,
    make_card,
    plan_from_price,
    set_invoice_totals,
    subscription_invoice_parent,
    subscription_line_parent,
)
from stripesync.emulator.behaviours.invoices import preview_invoice, refresh_invoice

__all__ = [
    "EVENT_TYPES",
    "card_payment_details",
    "embedded_list",
    "line_pricing",
    "make_bank_account",
    "make_card",
    "plan_from_price",
    "preview_invoice",
    "refresh_invoice",
    "set_invoice_totals",
    "subscription_invoice_parent",
    "subscription_line_parent",
]
