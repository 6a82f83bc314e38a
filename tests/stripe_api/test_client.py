import pytest

from stripesync.stripe_api.client import (
    StripeApi,
    StripeApiError,
    default_max_rps,
    key_mode,
    redact,
)


def test_secrets_are_masked_in_messages():
    text = redact("Invalid API Key provided: sk_live_abcdefghijklmnop and whsec_abcdef123")
    assert "abcdefghijklmnop" not in text and "abcdef123" not in text
    assert "sk_live_" in text


def test_errors_never_carry_the_key():
    e = StripeApiError(
        401, "Invalid API Key provided: sk_test_123456789abc", method="GET", path="/v1/customers"
    )
    assert "123456789abc" not in str(e)
    assert "HTTP 401" in str(e)


def test_default_rate_leaves_headroom():
    assert key_mode("sk_live_x") == "live" and default_max_rps("sk_live_x") == 50
    assert key_mode("rk_test_x") == "test" and default_max_rps("rk_test_x") == 20


@pytest.mark.parametrize("kind", ["500", "503", "reset", "429"])
async def test_transient_failures_are_retried(emulator, kind):
    """Server errors, dropped connections and 429s are retried; the call succeeds."""
    emulator.stripe().v1.customers.create(params={"email": "retry@example.com"})
    emulator.controls.fault(kind, "/v1/customers", method="GET", times=2)
    async with StripeApi("sk_test_emulator", api_base=emulator.url, max_rps=500) as api:
        page = await api.get("/v1/customers", {"limit": 10})
        assert [c["email"] for c in page["data"]] == ["retry@example.com"]
        assert api.stats.retries == 2
        assert api.stats.rate_limited == (2 if kind == "429" else 0)


async def test_refusals_are_not_retried(emulator):
    async with StripeApi("sk_test_emulator", api_base=emulator.url, max_rps=500) as api:
        with pytest.raises(StripeApiError) as info:
            await api.get("/v1/customers/cus_missing")
        assert info.value.status == 404 and info.value.code == "resource_missing"
        assert api.stats.retries == 0
        assert "\n" not in str(info.value)


async def test_an_unreachable_api_is_one_line_after_the_retries():
    async with StripeApi("sk_test_x", api_base="http://127.0.0.1:9", max_retries=1) as api:
        with pytest.raises(StripeApiError) as info:
            await api.get("/v1/customers")
    assert info.value.status == 0 and api.stats.retries == 1
    assert info.value.message.startswith("could not reach Stripe (")
    assert "\n" not in info.value.message
