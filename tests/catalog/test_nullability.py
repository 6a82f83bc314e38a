import json
import shutil
import subprocess
import sys
from pathlib import Path

from stripesync.catalog.nullability import (
    MISSING_REQUIRED,
    NULL_LEFT_OUT,
    NULL_REQUIRED,
    PRESENT_UNLESS_INCLUDED,
    STATES,
    check_object,
    load_nullability,
)
from stripesync.catalog.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]


def test_nullability_matches_the_pinned_npm_types():
    """The committed data is what tools/gen_ts_nullability.py makes of npm stripe's types
    (node and npm are needed, as for the node-postgres tests: a missing one fails)."""
    assert shutil.which("node") and shutil.which("npm"), "node and npm are needed"
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_ts_nullability.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr


def test_the_npm_package_carries_the_pinned_api_version():
    data = load_nullability()
    pinned = json.loads((ROOT / "tools" / "ts-stripe" / "package.json").read_text())
    assert data.npm_version == pinned["dependencies"]["stripe"]
    assert data.api_version == data.sdk_api_version == load_spec().api_version
    assert data.command == "python tools/gen_ts_nullability.py"


def test_every_top_level_object_and_nested_class_is_covered():
    spec = load_spec()
    data = load_nullability()
    # file_upload is the File class, which `file` covers
    assert data.objects_missing == ("file_upload",)
    assert spec.objects["file_upload"] == spec.objects["file"]
    missing = sorted(set(spec.objects.values()) - set(data.classes))
    assert missing == []
    # the only SDK classes without TypeScript counterpart are helpers, not API data
    for cls in data.classes_unmatched:
        assert cls.endswith(".TestHelpers") or cls.split(".")[0] in ("OAuth", "HTTPClient")
    nested = [c for c in spec.classes if "." in c and spec.classes[c]["fields"]]
    covered = [c for c in nested if c in data.classes]
    assert len(covered) / len(nested) > 0.99
    for fields in data.classes.values():
        assert set(fields.values()) <= set(STATES)


def test_known_facts_of_the_api_reference():
    spec = load_spec()
    data = load_nullability()

    def st(obj_type, field):
        return data.for_object(spec, obj_type, field)

    for field in ("sources", "subscriptions", "tax", "tax_ids"):
        assert st("customer", field) == "optional", field
    assert st("customer", "invoice_settings") == "required"
    assert st("customer", "email") == "nullable"
    assert st("customer", "id") == "required"
    assert st("price", "currency_options") == "optional"
    assert st("charge", "payment_method_details") == "nullable"
    assert st("event", "account") == "optional"
    # "application: string | Application": expandable, never null
    assert st("application_fee", "application") == "required"
    assert st("application_fee", "balance_transaction") == "nullable"
    # nested classes are matched by following fields
    assert data.state("Customer.InvoiceSettings", "default_payment_method") == "nullable"
    assert data.ts_interfaces["Customer.InvoiceSettings"].endswith("#Customer.InvoiceSettings")
    assert data.ts_interfaces["Event"] == "resources/Events#EventBase"
    # Python keywords: the SDK's `in_` is the wire's `in`
    assert data.state("TaxRegistration.CountryOptions", "in") is not None


def test_check_object_names_each_kind_of_disagreement():
    spec = load_spec()
    data = load_nullability()
    cls = spec.objects["customer"]
    obj = {
        "id": "cus_1",
        "object": "customer",
        "invoice_settings": None,  # required
        "sources": None,  # optional: left out, not null
        "tax_ids": {"object": "list", "data": [], "has_more": False, "url": "/v1/x"},
        "shipping": None,  # nullable: fine
        "not_a_field": 1,
    }
    found = {f.path: f for f in check_object(spec, data, cls, obj)}
    assert found["invoice_settings"].violation == NULL_REQUIRED
    assert found["sources"].violation == NULL_LEFT_OUT
    assert found["tax_ids"].violation == PRESENT_UNLESS_INCLUDED
    assert found["email"].violation == MISSING_REQUIRED
    assert found["shipping"].violation is None
    assert found["not_a_field"].state is None
    assert "subscriptions" not in found  # optional and absent: nothing to say
    nested = dict(obj, invoice_settings={"custom_fields": None, "footer": None})
    found = {f.path: f for f in check_object(spec, data, cls, nested)}
    assert found["invoice_settings"].violation is None
    assert found["invoice_settings.default_payment_method"].violation == MISSING_REQUIRED
    assert found["invoice_settings.footer"].violation is None
