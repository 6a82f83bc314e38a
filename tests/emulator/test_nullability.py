import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _tool():
    spec = importlib.util.spec_from_file_location(
        "measure_nullability", ROOT / "tools" / "measure_nullability.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_generated_account_is_measured_against_the_types():
    """The measure covers every generated object type; the emulator does not use the data
    yet, so disagreements are counted, not refused (docs/emulator-contract.md)."""
    tool = _tool()
    tallies = tool.measure_emulator(customers=20)
    assert {"customer", "charge", "invoice", "subscription", "price"} <= set(tallies)
    for t in tallies.values():
        assert t.objects > 0 and t.fields > 0
        assert 0 <= t.agree <= t.fields
    fields = sum(t.fields for t in tallies.values())
    agree = sum(t.agree for t in tallies.values())
    # a floor, not a goal: it may only rise as the emulator adopts the data
    assert agree / fields > 0.85
    assert "customer" in tool.report(tallies)
