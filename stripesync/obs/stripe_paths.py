"""The literal segments of Stripe's API paths, so that metrics can label a request by
its endpoint template (`/v1/customers/{id}/tax_ids`) rather than by its path.

Any segment of a path that is not listed here is taken for an id, so the label set stays
bounded whatever ids an account uses (custom coupon, plan and product ids, capability
names such as `card_payments`). The list is every literal segment of the /v1 endpoints of
the pinned SDK plus the legacy endpoints the catalog still reads;
`tests/obs/test_metrics.py` fails when a newer SDK adds a segment that is missing here.
"""

from __future__ import annotations

VERSIONS: frozenset[str] = frozenset({"v1", "v2"})

_WORDS = """
    3d_secure accept account account_links account_sessions accounts activate
    active_entitlements add_lines advance alerts amount_details_line_items apple_pay
    application_fees apply_customer_balance approve apps archive associations attach
    attach_payment authentications authorizations balance balance_settings balance_transactions
    billing billing_portal calculations cancel cancel_action capabilities capture cardholders
    cards cash_balance cash_balance_transactions charges checkout climate close collect_inputs
    collect_payment_method computed_upfront_line_items configurations confirm
    confirm_payment_intent confirmation_tokens connection_tokens country_specs coupons
    create_force_capture create_from_calculation create_preview create_reversal
    create_unlinked_refund credit_balance_summary credit_balance_transactions credit_grants
    credit_notes credit_reversals customer_sessions customers deactivate debit_reversals decline
    delete deliver detach disconnect discount disputes domains early_fraud_warnings entitlements
    ephemeral_keys event_summaries events exchange_rates expire external_accounts fail features
    feedback_options file_links files finalize finalize_amount financial_accounts
    financial_connections find forwarding fraud_challenges fund_cash_balance
    funding_instructions identity inbound_transfers increment increment_authorization installs
    invoice_payments invoice_rendering_templates invoiceitems invoices issuing line_items lines
    locations login_links mandates mark_uncollectible meter_event_adjustments meter_events
    meters migrate onboarding_links order_returns orders outbound_payments outbound_transfers
    owners pause pay payment_attempt_records payment_evaluations payment_intents payment_links
    payment_method_configurations payment_method_domains payment_methods payment_records payouts
    pdf personalization_designs persons physical_bundles plans post present_payment_method
    preview prices process_payment_intent process_setup_intent product_catalog products
    promotion_codes quotes radar reactivate readers received_credits received_debits redact
    refresh refund refund_payment refunds registrations reject release remove_lines
    report_payment report_payment_attempt report_payment_attempt_canceled
    report_payment_attempt_failed report_payment_attempt_guaranteed
    report_payment_attempt_informational report_refund report_runs report_types reporting
    requests respond resume return returns reversals reverse reviews scheduled_query_runs search
    secrets send sessions set_reader_display settings setup_attempts setup_intents ship shipping
    shipping_rates sigma skus source_transactions sources submit subscribe subscription_items
    subscription_schedules subscriptions succeed succeed_input_collection suppliers tax
    tax_codes tax_ids tax_rates terminal test_clocks test_helpers three_d_secure
    timeout_input_collection tokens topups transaction_entries transactions transfers treasury
    trial_offers unarchive uninstall unreject unsubscribe upcoming update_lines
    usage_record_summaries usage_records validate value_list_items value_lists
    verification_reports verification_sessions verify verify_microdeposits void
    webhook_endpoints
"""

LITERAL_SEGMENTS: frozenset[str] = frozenset(_WORDS.split())
