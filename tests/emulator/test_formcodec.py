"""Stripe's form encoding and the parameter checks, without HTTP."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stripesync.catalog.spec import load_spec
from stripesync.emulator.errors import StripeError
from stripesync.emulator.formcodec import decode, parse_query, plain
from stripesync.emulator.params import UNSET, ParamChecker


def test_nested_keys_arrays_and_appends():
    pairs = parse_query(
        "a[b][c]=1&items[0][price]=p1&items[1][price]=p2&items[1][quantity]=3"
        "&expand[]=x&expand[]=y&metadata[k]=&metadata[0]=zero"
    )
    out = plain(decode(pairs))
    assert out["a"] == {"b": {"c": "1"}}
    assert out["items"] == [{"price": "p1"}, {"price": "p2", "quantity": "3"}]
    assert out["expand"] == ["x", "y"]
    assert out["metadata"] == {"k": "", "0": "zero"}


@pytest.mark.parametrize("bad", ["a[b=1", "a[b]c=1", "[x]=1", "a=1&a[b]=2", "a[b]=2&a=1"])
def test_malformed_keys_are_stripe_errors(bad):
    with pytest.raises(StripeError) as exc:
        decode(parse_query(bad))
    assert exc.value.status == 400


def test_typed_params():
    checker = ParamChecker(load_spec().params)
    raw = decode(
        parse_query(
            "email=a@b.c&balance=-5&metadata[x]=&preferred_locales[0]=fr&address[city]=Paris"
            "&invoice_settings[custom_fields][0][name]=n&invoice_settings[custom_fields][0][value]=v"
        )
    )
    out = checker.check("CustomerCreateParams", raw)
    assert out["balance"] == -5
    assert out["metadata"] == {"x": UNSET}
    assert out["preferred_locales"] == ["fr"]
    assert out["invoice_settings"]["custom_fields"] == [{"name": "n", "value": "v"}]
    listed = checker.check("CustomerListParams", decode(parse_query("created[gte]=5&limit=3")))
    assert listed == {"created": {"gte": 5}, "limit": 3}
    with pytest.raises(StripeError) as exc:
        checker.check("CustomerListParams", decode(parse_query("limit=ten")))
    assert exc.value.message == "Invalid integer: ten"
    with pytest.raises(StripeError) as exc:
        checker.check("PriceCreateParams", decode(parse_query("unit_amount=5&currency=")))
    assert "empty string" in exc.value.message


@given(
    st.dictionaries(
        st.from_regex(r"[a-z]{1,8}", fullmatch=True),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
        max_size=8,
    )
)
def test_metadata_round_trips(md):
    from urllib.parse import urlencode

    raw = decode(parse_query(urlencode({f"metadata[{k}]": v for k, v in md.items()})))
    assert plain(raw).get("metadata", {}) == md
