"""Webhook signatures, checked against the official SDK's own verification."""

import hashlib
import hmac
import json
import time

import pytest
import stripe
from hypothesis import given, settings
from hypothesis import strategies as st

from stripesync.http.webhooks import (
    ReplayGuard,
    WebhookReceiver,
    WebhookRejected,
    parse_header,
    verify,
)

SECRET = "whsec_test_0123456789abcdefSECRET"
OLD_SECRET = "whsec_test_previousSECRET42"
NOW = 1_750_000_000


def event_body(event_id="evt_1", **extra):
    return json.dumps(
        {"id": event_id, "object": "event", "type": "customer.created", **extra}
    ).encode()


def sig(payload: bytes, secret: str, t: int) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()


def header(payload: bytes, secret: str = SECRET, t: int = NOW, *more: str) -> str:
    return ",".join([f"t={t}", f"v1={sig(payload, secret, t)}", *more])


def sdk_accepts(payload: bytes, hdr: str | None, secret: str = SECRET, now: float = NOW) -> bool:
    """The official SDK's verdict, at time `now` (its clock is time.time())."""
    real = time.time
    try:
        time.time = lambda: now
        stripe.WebhookSignature.verify_header(payload, hdr, secret, tolerance=300)
        return True
    except stripe.SignatureVerificationError:
        return False
    finally:
        time.time = real


def reason(payload, hdr, secrets=(SECRET,), now=NOW):
    with pytest.raises(WebhookRejected) as err:
        verify(payload, hdr, list(secrets), now=now)
    return err.value.reason


def test_a_genuine_delivery_is_accepted_by_us_and_by_the_sdk():
    body = event_body()
    hdr = header(body)
    assert verify(body, hdr, [SECRET], now=NOW)["id"] == "evt_1"
    assert sdk_accepts(body, hdr)
    event = stripe.Webhook.construct_event(body, header(body, t=int(time.time())), SECRET)
    assert event.id == "evt_1"


def test_signatures_made_by_the_sdk_are_accepted():
    body = event_body("evt_sdk")
    hdr = stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET, NOW)
    assert hdr == header(body)  # the same bytes as ours
    assert verify(body, hdr, [SECRET], now=NOW + 10)["id"] == "evt_sdk"


@pytest.mark.parametrize(
    "hdr",
    [
        lambda b: header(b, "whsec_wrong"),  # another endpoint's secret
        lambda b: header(b + b" "),  # signed over another body
        lambda b: header(b).replace(f"t={NOW}", f"t={NOW + 1}"),  # timestamp moved
        lambda b: f"t={NOW},v1={'0' * 64}",
        lambda b: f"t={NOW},v1={sig(b, SECRET, NOW)[:-1]}",  # truncated
        lambda b: f"t={NOW},v1={sig(b, SECRET, NOW).upper()}",
    ],
)
def test_forged_deliveries_are_rejected_by_us_and_by_the_sdk(hdr):
    body = event_body()
    h = hdr(body)
    assert reason(body, h) == "forged"
    assert not sdk_accepts(body, h)


def test_a_non_ascii_signature_is_forged_not_a_crash():
    body = event_body()
    hdr = f"t={NOW},v1=\u00e9{sig(body, SECRET, NOW)[1:]}"
    assert reason(body, hdr) == "forged"
    # the SDK 16.1 raises TypeError from hmac.compare_digest here
    with pytest.raises((TypeError, stripe.SignatureVerificationError)):
        stripe.WebhookSignature.verify_header(body, hdr, SECRET, tolerance=None)


def test_stale_deliveries_are_rejected_at_the_tolerance():
    body = event_body()
    assert verify(body, header(body, t=NOW - 300), [SECRET], now=NOW)
    assert sdk_accepts(body, header(body, t=NOW - 300))
    assert reason(body, header(body, t=NOW - 301)) == "stale"
    assert not sdk_accepts(body, header(body, t=NOW - 301))
    # stricter than the SDK: far in the future is stale too (the replay guard needs it)
    assert reason(body, header(body, t=NOW + 301)) == "stale"
    assert sdk_accepts(body, header(body, t=NOW + 301))
    assert verify(body, header(body, t=NOW + 300), [SECRET], now=NOW)


def test_a_forged_old_delivery_is_forged_not_stale():
    body = event_body()
    assert reason(body, header(body, "whsec_wrong", t=NOW - 10_000)) == "forged"


@pytest.mark.parametrize(
    "hdr",
    [
        None,
        "",
        "garbage",
        f"v1={'0' * 64}",  # no timestamp
        f"t=abc,v1={'0' * 64}",
        f"t=-5,v1={'0' * 64}",
        f"t=1,t=2,v1={'0' * 64}",
        f"t={NOW}",  # no signature
        f"t={NOW},v0={'0' * 64}",  # only a scheme we do not use
        f"t={NOW}," + ",".join(["v1=00"] * 17),
        f"t={NOW},v1={'0' * 5000}",
    ],
)
def test_malformed_headers(hdr):
    body = event_body()
    assert reason(body, hdr) == "malformed"
    assert not sdk_accepts(body, hdr)


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"object": "event"}', b"\xff\xfe"])
def test_a_signed_body_that_is_not_an_event_is_malformed(body):
    assert reason(body, header(body)) == "malformed"


def test_several_signatures_and_several_secrets():
    body = event_body()
    # Stripe rolling the endpoint's secret: one v1 per secret, either may be ours
    both = header(body, SECRET, NOW, f"v1={sig(body, OLD_SECRET, NOW)}")
    assert verify(body, both, [OLD_SECRET], now=NOW)
    assert sdk_accepts(body, both, OLD_SECRET)
    # our side rolling: the old and the new secret are both configured
    assert verify(body, header(body, OLD_SECRET), [SECRET, OLD_SECRET], now=NOW)
    assert verify(body, header(body, SECRET), [SECRET, OLD_SECRET], now=NOW)
    # a bad signature next to a good one, and other schemes, are ignored
    mixed = f"t={NOW},v0=abc,v1={'f' * 64},v1={sig(body, SECRET, NOW)}"
    assert verify(body, mixed, [SECRET], now=NOW)
    assert sdk_accepts(body, mixed)
    assert reason(body, header(body, "whsec_other"), [SECRET, OLD_SECRET]) == "forged"


def test_no_secret_configured_is_an_error_not_an_acceptance():
    body = event_body()
    for secrets in ([], [""], ["  "]):
        with pytest.raises(ValueError):
            verify(body, header(body), secrets, now=NOW)
        with pytest.raises(ValueError):
            WebhookReceiver(secrets)


def test_secrets_never_appear_in_errors_or_reprs():
    body = event_body()
    receiver = WebhookReceiver([SECRET, OLD_SECRET])
    assert SECRET not in repr(receiver) and OLD_SECRET not in repr(receiver)
    for hdr in (header(body, "whsec_x"), header(body, t=NOW - 1000), "x", None):
        with pytest.raises(WebhookRejected) as err:
            receiver.receive(body, hdr, now=NOW)
        text = f"{err.value} {err.value.message!r} {err.value.args!r}"
        assert SECRET not in text and sig(body, SECRET, NOW) not in text


def test_parse_header():
    assert parse_header(f"t={NOW}, v1=aa,v1=bb,v0=cc,x") == (NOW, ["aa", "bb"])


def test_a_replayed_delivery_is_rejected_once_seen():
    receiver = WebhookReceiver([SECRET])
    body = event_body()
    hdr = header(body)
    assert receiver.receive(body, hdr, now=NOW)["id"] == "evt_1"
    with pytest.raises(WebhookRejected) as err:
        receiver.receive(body, hdr, now=NOW + 5)
    assert err.value.reason == "replayed"
    # a Stripe retry of the same event is signed anew: it is not a replay
    assert receiver.receive(body, header(body, t=NOW + 60), now=NOW + 60)["id"] == "evt_1"


def test_a_replay_with_its_signatures_reordered_or_trimmed_is_still_a_replay():
    receiver = WebhookReceiver([SECRET, OLD_SECRET])
    body = event_body()
    new, old = sig(body, SECRET, NOW), sig(body, OLD_SECRET, NOW)
    receiver.receive(body, f"t={NOW},v1={new},v1={old}", now=NOW)
    for hdr in (f"t={NOW},v1={old},v1={new}", f"t={NOW},v1={old}", f"t={NOW},v1={new}"):
        with pytest.raises(WebhookRejected) as err:
            receiver.receive(body, hdr, now=NOW + 1)
        assert err.value.reason == "replayed"


def test_the_replay_guard_forgets_what_is_out_of_the_window_and_stays_bounded():
    guard = ReplayGuard(tolerance=300, max_entries=3)
    for i in range(3):
        guard.check(bytes([i]), NOW + i, now=NOW)
    assert len(guard) == 3
    with pytest.raises(WebhookRejected):
        guard.check(bytes([0]), NOW, now=NOW + 100)
    guard.check(bytes([9]), NOW + 9, now=NOW)  # full: the oldest entry goes
    assert len(guard) == 3
    guard.check(bytes([0]), NOW, now=NOW)
    # once its timestamp is out of the window an entry is dropped (stale by then anyway)
    guard.check(bytes([10]), NOW + 400, now=NOW + 400)
    assert len(guard) == 1

    receiver = WebhookReceiver([SECRET])
    body = event_body()
    receiver.receive(body, header(body), now=NOW)
    with pytest.raises(WebhookRejected) as err:
        receiver.receive(body, header(body), now=NOW + 301)
    assert err.value.reason == "stale"
    assert len(receiver.guard) == 1


@settings(max_examples=60, deadline=None)
@given(
    body=st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=4).map(
        lambda d: json.dumps({"id": "evt_x", **d}, ensure_ascii=False).encode()
    ),
    age=st.integers(-290, 600),
    signer=st.sampled_from([SECRET, OLD_SECRET, "whsec_attacker"]),
)
def test_we_agree_with_the_sdk_on_past_timestamps(body, age, signer):
    hdr = header(body, signer, NOW - age)
    try:
        verify(body, hdr, [SECRET], now=NOW)
        ours = True
    except WebhookRejected:
        ours = False
    assert ours == sdk_accepts(body, hdr)
    assert ours == (signer == SECRET and age <= 300)
