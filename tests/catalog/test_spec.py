import subprocess
import sys
from pathlib import Path

import stripe

from stripesync.catalog.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]


def test_spec_matches_the_installed_sdk():
    """The committed spec is what tools/gen_sdk_spec.py makes of the installed SDK."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_sdk_spec.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    spec = load_spec()
    assert spec.sdk_version == stripe.VERSION
    assert spec.api_version == stripe.api_version


def test_spec_knows_customers_fields_and_endpoints():
    spec = load_spec()
    cls = spec.objects["customer"]
    fields = spec.fields(cls)
    assert fields["created"] == {"t": "int", "unix": True}
    assert fields["email"] == {"t": "str", "null": True}
    assert fields["test_clock"]["t"] == "expandable"
    ops = {(o.verb, o.path) for o in spec.operations}
    assert ("GET", "/v1/customers") in ops
    assert ("POST", "/v1/customers/{customer}") in ops
    assert ("DELETE", "/v1/customers/{customer}/tax_ids/{id}") in ops
    create = spec.operation("POST", "/v1/customers")
    assert create is not None and create.params == "CustomerCreateParams"
    assert "email" in spec.param_fields("CustomerCreateParams")
    assert "api_key" not in spec.param_fields("CustomerCreateParams")
