"""Refused writes as PostgreSQL errors: the proxy's own refusals and Stripe's.

Every refusal carries a SQLSTATE. Stripe's errors are mapped by :func:`stripe_refusal`
(the table is in docs/proxy.md); the message is Stripe's own, the detail carries
Stripe's type, code, param and request id, and, for a statement of several rows, how
many rows Stripe applied before the failure.
"""

from __future__ import annotations

from dataclasses import dataclass

from stripesync.proxy.messages import ErrorResponse
from stripesync.stripe_api.client import StripeApiError

__all__ = ["Refusal", "stripe_refusal", "stripe_sqlstate"]

# The proxy's own refusals.
FEATURE_NOT_SUPPORTED = "0A000"  # a statement shape the proxy does not take over
WRONG_OBJECT_TYPE = "42809"  # Stripe offers no such write on this collection
READ_ONLY_COLUMN = "428C9"  # generated_always: a column Stripe sets
UNDEFINED_COLUMN = "42703"
NOT_NULL_VIOLATION = "23502"  # a required value (path column) missing, or NULL not allowed
CARDINALITY_VIOLATION = "21000"  # ON CONFLICT DO UPDATE affecting a row twice
INVALID_PARAMETER_VALUE = "22023"
WARNING = "01000"

# Stripe's refusals.
UNIQUE_VIOLATION = "23505"
FOREIGN_KEY_VIOLATION = "23503"
CHECK_VIOLATION = "23514"
NO_DATA_FOUND = "P0002"
RAISE_EXCEPTION = "P0001"
INVALID_AUTHORIZATION = "28000"
INSUFFICIENT_PRIVILEGE = "42501"
SERIALIZATION_FAILURE = "40001"
CONFIGURATION_LIMIT_EXCEEDED = "53400"
SYSTEM_ERROR = "58000"


@dataclass(slots=True)
class Refusal(Exception):
    """A write the proxy refuses, as the ErrorResponse the client gets."""

    sqlstate: str
    message: str
    detail: str | None = None
    hint: str | None = None
    schema_name: str | None = None
    table_name: str | None = None
    column_name: str | None = None

    def __str__(self) -> str:
        return f"{self.message} (SQLSTATE {self.sqlstate})"

    def to_error(self) -> ErrorResponse:
        return ErrorResponse.create(
            self.sqlstate,
            self.message,
            detail=self.detail,
            hint=self.hint,
            schema_name=self.schema_name,
            table_name=self.table_name,
            column_name=self.column_name,
        )


def stripe_sqlstate(err: StripeApiError) -> str:
    """The SQLSTATE of a Stripe refusal (see docs/proxy.md for the table)."""
    status, kind, code = err.status, err.type or "", err.code or ""
    if status == 0 or kind == "api_error" or status >= 500:
        return SYSTEM_ERROR
    if status == 401 or kind == "authentication_error":
        return INVALID_AUTHORIZATION
    if status == 403:
        return INSUFFICIENT_PRIVILEGE
    if status == 429 or kind == "rate_limit_error":
        return CONFIGURATION_LIMIT_EXCEEDED
    if status == 409 or kind == "idempotency_error":
        return SERIALIZATION_FAILURE
    if kind == "card_error" or status == 402:
        return RAISE_EXCEPTION
    if code == "resource_already_exists":
        return UNIQUE_VIOLATION
    if code == "resource_missing":
        # the row's own object (the path, or param "id"), or another object it names
        return NO_DATA_FOUND if err.param in (None, "id") else FOREIGN_KEY_VIOLATION
    if status == 404:
        return FEATURE_NOT_SUPPORTED  # an endpoint this account or API version lacks
    if code == "parameter_missing":
        return NOT_NULL_VIOLATION
    if not code or code.startswith("parameter_") or code.endswith("_invalid"):
        return INVALID_PARAMETER_VALUE
    return CHECK_VIOLATION  # refused for the object's state: a business rule


def stripe_refusal(
    err: StripeApiError,
    *,
    applied: int,
    total: int,
    row: int | None = None,
    table: str | None = None,
    schema: str | None = None,
) -> Refusal:
    """The client's error for a Stripe refusal of row ``row`` (0-based) of ``total``."""
    bits = [
        f"{name} {value}"
        for name, value in (
            ("type", err.type),
            ("code", err.code),
            ("param", err.param),
            ("request id", err.request_id),
        )
        if value
    ]
    if err.status:
        bits.append(f"HTTP {err.status}")
    call = f"{err.method} {err.path}".strip()
    detail = f"Stripe refused {call}" if call else "Stripe refused the write"
    detail += f" ({', '.join(bits)})." if bits else "."
    if total > 1:
        where = f" at row {row + 1}" if row is not None else ""
        detail += (
            f" {applied} of {total} rows were applied at Stripe before the failure{where};"
            " they are stored in the database."
        )
    return Refusal(
        stripe_sqlstate(err),
        err.message,
        detail=detail,
        hint="ROLLBACK cannot undo a change Stripe already made." if applied else None,
        schema_name=schema,
        table_name=table,
    )
