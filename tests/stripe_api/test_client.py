from stripesync.stripe_api.client import StripeApiError, default_max_rps, key_mode, redact


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
