"""Errors in Stripe's JSON shape: `{"error": {"type", "message", "code", "param"}}`."""

from __future__ import annotations

import json
from typing import Any

DOCS = "https://stripe.com/docs"


class StripeError(Exception):
    """An error response. `validation` marks errors raised before the request ran
    (Stripe does not keep an idempotent result for those)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        validation: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}
        self.validation = validation
        # more fields of the error hash (a card error's `decline_code`, `charge`)
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"message": self.message, "type": self.type}
        if self.code:
            err["code"] = self.code
            err["doc_url"] = f"{DOCS}/error-codes/{self.code.replace('_', '-')}"
        if self.param:
            err["param"] = self.param
        err.update(self.extra)
        return {"error": err}

    def to_bytes(self) -> bytes:
        return json.dumps(self.body()).encode()

    # ---- the common ones ------------------------------------------------------------

    @classmethod
    def invalid(
        cls,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        validation: bool = False,
    ) -> StripeError:
        return cls(400, message, param=param, code=code, validation=validation)

    @classmethod
    def missing_param(cls, param: str, *, validation: bool = False) -> StripeError:
        """A required parameter left out: 400 `parameter_missing`."""
        return cls(
            400,
            f"Missing required param: {param}.",
            code="parameter_missing",
            param=param,
            validation=validation,
        )

    @classmethod
    def missing(cls, obj_type: str, obj_id: str, *, param: str | None = "id") -> StripeError:
        """No such object. The object a path names (param None or "id") is 404; an
        object a parameter names (`customer`, `items[0][price]`) is 400, as Stripe
        answers both."""
        return cls(
            404 if param in (None, "id") else 400,
            f"No such {human_name(obj_type)}: '{obj_id}'",
            code="resource_missing",
            param=param,
        )

    @classmethod
    def unknown_url(cls, method: str, path: str) -> StripeError:
        return cls(
            404,
            f"Unrecognized request URL ({method}: {path}). Please see {DOCS} or we can help "
            "at https://support.stripe.com/.",
        )

    @classmethod
    def api_error(cls, status: int = 500) -> StripeError:
        return cls(
            status,
            "An unknown error occurred" if status == 500 else "The service is unavailable.",
            type="api_error",
        )


_HUMAN = {
    "payment_intent": "payment_intent",  # "No such payment_intent: 'pi_...'"
    "tax_id": "tax ID",
    "invoiceitem": "invoice item",
    "line_item": "invoice line item",
    "item": "line item",
    "fee_refund": "application fee refund",
}


def human_name(obj_type: str) -> str:
    return _HUMAN.get(obj_type, obj_type.replace("_", " ").replace(".", " "))
