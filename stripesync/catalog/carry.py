"""Children a parent's list page can carry, so the backfill needs no request per parent.

Stripe leaves some lists out of an object unless asked: a customer's `sources` and
`tax_ids`, a checkout session's `line_items` are *includable* (the TypeScript
declarations make them optional, `field?: ApiList<T>`), and `expand[]=data.<field>` on
the parent's list page includes them, each as a list of up to 10 with `has_more`. A
complete one is the parent's whole child list; a truncated one is read per parent.

Some per-parent lists also have a *hint* on the parent that tells whether the list can
hold anything at all: a customer's `cash_balance` (includable too) names every currency
the customer ever held cash in, even at 0 ("You cannot delete a customer with any cash
balances, even if the balance is 0"), and every cash balance transaction moves such a
balance; a setup intent's `latest_attempt` is null until its first attempt. A parent
whose hint says "none" needs no request.

The lists a parent always embeds (an invoice's `lines`, a subscription's `items`, a
credit note's `lines`, a transfer's `reversals`, an application fee's `refunds`) need
no asking: `embedded_field` names them, and the backfill reads them from the parent's
stored copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Carry:
    """A child collection's read through `parent` that the parent's list page carries."""

    child: str
    parent: str
    field: str  # the parent's field: the child list itself, or a hint
    # None: the field is the child list (complete unless `has_more`). Otherwise the
    # field is a hint: the parent may have children only where it returns True.
    hint: Callable[[Any], bool] | None = None
    # the hint is a field of the parent as stored (no expansion asked for)
    stored: bool = False

    @property
    def expand(self) -> str:
        """What the parent's list asks for: `expand[]=data.<field>`."""
        return f"data.{self.field}"


def _holds_cash(cash_balance: Any) -> bool:
    """A customer's cash balance names a currency (even at 0) once it ever held cash."""
    if not isinstance(cash_balance, dict):
        return False
    return bool(cash_balance.get("available"))


def _attempted(latest_attempt: Any) -> bool:
    """A setup intent's `latest_attempt` is null until its first attempt."""
    return latest_attempt is not None


# Which parent field carries which child, per the API reference ("includable") and the
# TypeScript declarations (optional list fields of Customer and Checkout Session).
CARRIES: tuple[Carry, ...] = (
    Carry("source", "customer", "sources"),
    Carry("bank_account", "customer", "sources"),
    Carry("tax_id", "customer", "tax_ids"),
    Carry("customer_cash_balance_transaction", "customer", "cash_balance", _holds_cash),
    Carry("item", "checkout.session", "line_items"),
    Carry("setup_attempt", "setup_intent", "latest_attempt", _attempted, stored=True),
)


def carries_of(parent: str) -> list[Carry]:
    """What the parent's list page carries (asked for with `expand[]`)."""
    return [c for c in CARRIES if c.parent == parent and not c.stored]


def carry_for(child: str, parent: str | None) -> Carry | None:
    return next((c for c in CARRIES if c.child == child and c.parent == parent), None)
