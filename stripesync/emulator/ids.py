"""Stripe's id prefixes and an id generator."""

from __future__ import annotations

import random
import string

ALNUM = string.ascii_letters + string.digits

PREFIXES: dict[str, str] = {
    "account": "acct",
    "apple_pay_domain": "apwc",
    "application": "ca",
    "application_fee": "fee",
    "apps.secret": "appsecret",
    "balance_transaction": "txn",
    "bank_account": "ba",
    "billing.alert": "alrt",
    "billing.credit_balance_transaction": "cbtxn",
    "billing.credit_grant": "credgr",
    "billing.meter": "mtr",
    "billing_portal.configuration": "bpc",
    "billing_portal.session": "bps",
    "capability": "card_payments",
    "card": "card",
    "charge": "ch",
    "checkout.session": "cs_test",
    "climate.order": "climorder",
    "confirmation_token": "ctoken",
    "coupon": "",
    "credit_note": "cn",
    "credit_note_line_item": "cnli",
    "customer": "cus",
    "customer_balance_transaction": "cbtxn",
    "customer_cash_balance_transaction": "ccsbtxn",
    "customer_session": "cuss",
    "dispute": "dp",
    "entitlements.active_entitlement": "ent",
    "entitlements.feature": "feat",
    "ephemeral_key": "ephkey",
    "event": "evt",
    "fee_refund": "fr",
    "file": "file",
    "file_link": "link",
    "financial_connections.account": "fca",
    "financial_connections.session": "fcsess",
    "forwarding.request": "fwdreq",
    "identity.verification_report": "vr",
    "identity.verification_session": "vs",
    "invoice": "in",
    "invoice_payment": "inpay",
    "invoice_rendering_template": "inrtem",
    "invoiceitem": "ii",
    "issuing.authorization": "iauth",
    "issuing.card": "ic",
    "issuing.cardholder": "ich",
    "issuing.dispute": "idp",
    "issuing.personalization_design": "pd",
    "issuing.physical_bundle": "ics",
    "issuing.token": "intok",
    "issuing.transaction": "ipi",
    "item": "li",
    "line_item": "il",
    "mandate": "mandate",
    "payment_attempt_record": "par",
    "payment_intent": "pi",
    "payment_link": "plink",
    "payment_method": "pm",
    "payment_method_configuration": "pmc",
    "payment_method_domain": "pmd",
    "payment_record": "pr",
    "payout": "po",
    "person": "person",
    "plan": "price",
    "price": "price",
    "product": "prod",
    "product_feature": "prodft",
    "promotion_code": "promo",
    "quote": "qt",
    "radar.early_fraud_warning": "issfr",
    "radar.value_list": "rsl",
    "radar.value_list_item": "rsli",
    "refund": "re",
    "reporting.report_run": "frr",
    "review": "prv",
    "scheduled_query_run": "sqr",
    "setup_attempt": "setatt",
    "setup_intent": "seti",
    "shipping_rate": "shr",
    "source": "src",
    "source_transaction": "srctxn",
    "subscription": "sub",
    "subscription_item": "si",
    "subscription_schedule": "sub_sched",
    "tax.calculation": "taxcalc",
    "tax.registration": "taxreg",
    "tax.transaction": "tax",
    "tax_code": "txcd",
    "tax_id": "txi",
    "tax_rate": "txr",
    "terminal.configuration": "tmc",
    "terminal.location": "tml",
    "terminal.reader": "tmr",
    "test_helpers.test_clock": "clock",
    "three_d_secure.authentication": "3dsauth",
    "token": "tok",
    "topup": "tu",
    "transfer": "tr",
    "transfer_reversal": "trr",
    "treasury.credit_reversal": "credrev",
    "treasury.debit_reversal": "debrev",
    "treasury.financial_account": "fa",
    "treasury.inbound_transfer": "ibt",
    "treasury.outbound_payment": "obp",
    "treasury.outbound_transfer": "obt",
    "treasury.received_credit": "rc",
    "treasury.received_debit": "rd",
    "treasury.transaction": "trxn",
    "treasury.transaction_entry": "trxne",
    "webhook_endpoint": "we",
    # legacy collections (hand-declared, see legacy.py)
    "order": "or",
    "order_return": "orret",
    "sku": "sku",
    "three_d_secure": "tdsrc",
    "usage_record": "mbur",
    "usage_record_summary": "sis",
}


def prefix_for(obj_type: str) -> str:
    if obj_type in PREFIXES:
        return PREFIXES[obj_type]
    last = obj_type.rsplit(".", 1)[-1]
    return "".join(w[0] for w in last.split("_") if w) or "obj"


class IdMaker:
    """Random ids shaped like Stripe's: prefix, underscore, 24 alphanumerics."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)

    def token(self, n: int = 24) -> str:
        return "".join(self.rng.choices(ALNUM, k=n))

    def new(self, obj_type: str) -> str:
        prefix = prefix_for(obj_type)
        if not prefix:  # coupons: 8 characters, no prefix
            return self.token(8)
        return f"{prefix}_{self.token()}"

    def request_id(self) -> str:
        return "req_" + self.token(14)
