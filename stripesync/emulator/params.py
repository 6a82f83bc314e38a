"""Request parameters checked and typed against the SDK's parameter TypedDicts.

Stripe refuses what it does not know: an unknown parameter, a missing required one, a
value of the wrong type, or an empty string for a parameter that cannot be unset. The
messages follow Stripe's wording.
"""

from __future__ import annotations

import re
from typing import Any

from stripesync.catalog.spec import TypeDesc
from stripesync.emulator.errors import StripeError
from stripesync.emulator.formcodec import Indexed, plain

_INT = re.compile(r"-?\d+\Z")
UNSET = ""  # an empty string: "unset this"

# Integer parameters Stripe refuses below 1, with "This value must be greater than or
# equal to 1." (stripe/stripe-php#943: a Charge's amount of 0). Keyed by the SDK's
# parameter class and field.
AT_LEAST_ONE: frozenset[tuple[str, str]] = frozenset(
    {
        ("PaymentIntentCreateParams", "amount"),
        ("PaymentIntentUpdateParams", "amount"),
        ("ChargeCreateParams", "amount"),
    }
)
# Integer fields, under any parameter, Stripe refuses below 0 with "Invalid
# non-negative integer" (stripe/stripe-php#1285: price_data[unit_amount]=-100).
NON_NEGATIVE: frozenset[str] = frozenset({"unit_amount"})

# The currencies Stripe lists in its "Invalid currency" refusal (the list of
# lukec/stripe-perl#156, 2020, and byn from a 2024 refusal's list).
CURRENCY_LIST: tuple[str, ...] = tuple(
    """usd aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bif bmd bnd bob brl bsd
    bwp byn bzd cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp
    gbp gel gip gmd gnf gtq gyd hkd hnl hrk htg huf idr ils inr isk jmd jpy kes kgs khr
    kmf krw kyd kzt lak lbp lkr lrd lsl mad mdl mga mkd mmk mnt mop mro mur mvr mwk mxn
    myr mzn nad ngn nio nok npr nzd pab pen pgk php pkr pln pyg qar ron rsd rub rwf sar
    sbd scr sek sgd shp sll sos srd std szl thb tjs top try ttd twd tzs uah ugx uyu uzs
    vnd vuv wst xaf xcd xof xpf yer zar zmw eek lvl svc vef ltl""".split()  # noqa: SIM905
)
CURRENCIES: frozenset[str] = frozenset(CURRENCY_LIST)


class ParamChecker:
    def __init__(self, params: dict[str, dict[str, Any]]) -> None:
        self.params = params

    def check(self, params_name: str | None, raw: dict[str, Any]) -> dict[str, Any]:
        """Typed parameters, or a StripeError. Without a declared type, anything goes."""
        if params_name is None or params_name not in self.params:
            return plain(raw)  # type: ignore[no-any-return]
        return self._object(params_name, raw, "")

    def fields(self, params_name: str | None) -> dict[str, TypeDesc]:
        if params_name is None or params_name not in self.params:
            return {}
        return self.params[params_name]["fields"]  # type: ignore[no-any-return]

    # ---- walking ---------------------------------------------------------------------

    def _object(self, name: str, raw: dict[str, Any], prefix: str) -> dict[str, Any]:
        fields: dict[str, TypeDesc] = self.params[name]["fields"]
        unknown = [k for k in raw if k not in fields]
        if unknown:
            names = [_join(prefix, k) for k in unknown]
            if len(names) == 1:
                msg = f"Received unknown parameter: {names[0]}"
            else:
                msg = f"Received unknown parameters: {', '.join(names)}"
            raise StripeError.invalid(
                msg, param=names[0], code="parameter_unknown", validation=True
            )
        out: dict[str, Any] = {}
        for key, d in fields.items():
            if key in raw:
                out[key] = v = self._value(d, raw[key], _join(prefix, key))
                if isinstance(v, int) and not isinstance(v, bool):
                    _check_floor(name, key, v, _join(prefix, key))
            elif d.get("required"):
                raise StripeError.missing_param(_join(prefix, key), validation=True)
        return out

    def _value(self, d: TypeDesc, v: Any, param: str) -> Any:
        if isinstance(v, str) and v == "":
            if d.get("emptyable") or d.get("t") == "any":
                return UNSET
            if d.get("t") == "str" and not d.get("required"):
                return UNSET  # a string parameter: "" unsets it
            raise StripeError.invalid(
                f"You passed an empty string for '{param}'. We assume empty values are an "
                f"attempt to unset a parameter; however '{param}' cannot be unset. You should "
                f"remove '{param}' from your request or supply a non-empty value.",
                param=param,
                code="parameter_invalid_empty",
                validation=True,
            )
        t = d.get("t")
        if t == "union":
            return self._union(d, v, param)
        if t == "str":
            if not isinstance(v, str):
                raise _invalid(f"Invalid string: {_show(v)}", param)
            if _leaf(param) == "currency" and v.lower() not in CURRENCIES:
                raise _invalid(
                    f"Invalid currency: {v}. Stripe currently supports these currencies: "
                    f"{', '.join(CURRENCY_LIST)}.",
                    param,
                )
            return v
        if t == "int":
            if isinstance(v, str) and _INT.match(v):
                return int(v)
            raise _invalid(f"Invalid integer: {_show(v)}", param, "parameter_invalid_integer")
        if t == "float":
            try:
                if isinstance(v, str):
                    return float(v)
            except ValueError:
                pass
            raise _invalid(f"Invalid decimal: {_show(v)}", param)
        if t == "bool":
            if v in ("true", "false"):
                return v == "true"
            raise _invalid(f"Invalid boolean: {_show(v)}", param)
        if t == "enum":
            values = d["values"]
            if isinstance(v, str) and v in values:
                return v
            shown = [str(x) for x in values]
            listed = (
                ", ".join(shown[:-1]) + f", or {shown[-1]}" if len(shown) > 1 else "".join(shown)
            )
            raise _invalid(f"Invalid {_leaf(param)}: must be one of {listed}", param)
        if t == "list":
            if isinstance(v, Indexed):
                items = v.as_list()
            elif isinstance(v, list):
                items = v
            else:
                raise _invalid("Invalid array", param)
            return [self._value(d["of"], x, f"{param}[{i}]") for i, x in enumerate(items)]
        if t == "map":
            if not isinstance(v, dict):
                raise _invalid("Invalid hash", param)
            return {
                str(k): UNSET if x == "" else self._value(d["of"], x, f"{param}[{k}]")
                for k, x in v.items()
            }
        if t == "class":
            name = d["name"]
            if not isinstance(v, dict):
                raise _invalid("Invalid hash", param)
            if name not in self.params:
                return plain(v)
            return self._object(name, v, param)
        return plain(v)

    def _union(self, d: TypeDesc, v: Any, param: str) -> Any:
        options: list[TypeDesc] = d["of"]
        if isinstance(v, dict):
            for o in options:
                if o.get("t") in ("class", "map", "list", "any"):
                    if o.get("t") == "list" and not isinstance(v, Indexed):
                        continue
                    return self._value(o, v, param)
            raise _invalid(f"Invalid {param}: expected a scalar value", param)
        first: StripeError | None = None
        for o in options:
            if o.get("t") in ("class", "map", "list"):
                continue
            try:
                return self._value(o, v, param)
            except StripeError as e:
                first = first or e
        if first is not None:
            raise first
        raise _invalid("Invalid hash", param)


def _invalid(message: str, param: str, code: str | None = None) -> StripeError:
    return StripeError.invalid(message, param=param, code=code, validation=True)


def _check_floor(params_name: str, key: str, v: int, param: str) -> None:
    if v < 1 and (params_name, key) in AT_LEAST_ONE:
        raise _invalid("This value must be greater than or equal to 1.", param)
    if v < 0 and key in NON_NEGATIVE:
        raise _invalid("Invalid non-negative integer", param)


def _leaf(param: str) -> str:
    """The last name of a parameter path: `currency` of `price_data[currency]`."""
    return param.rsplit("[", 1)[-1].rstrip("]")


def _join(prefix: str, key: str) -> str:
    return f"{prefix}[{key}]" if prefix else key


def _show(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_show(x)}" for k, x in plain(v).items()) + "}"
    return str(v)
