"""How far the emulator's objects are from Stripe's TypeScript types (ts_nullability.json).

Generates the emulator's default account (`stripesync.emulator.generator.generate` on
a fresh `Emulator()`), walks every stored object (nested objects held by value too)
and counts, per object type, the fields that disagree with the types:

- ``null_required``: null where the field is ``required``;
- ``null_left_out``: null where the field is ``optional`` (Stripe leaves it out, e.g.
  ``customer.sources`` unless included, ``customer.tax`` unless expanded);
- ``missing_required``: absent where the field is always sent;
- ``present_unless_included``: an optional list (``customer.sources``) sent although
  Stripe leaves it out unless expanded or included;
- ``enum_value``: a value the SDK's enum does not declare.

Fields the types do not declare are counted apart (``unknown``). With ``--flows`` it
measures the write flows instead (`stripesync.emulator.conformance.Flows`: one object
created through every create route of the emulator, updated where cheap): every
response, every event's ``data.object``, every stored object, and the top-level
objects embedded in each. Reproduce with:

    python tools/measure_nullability.py [--customers N] [--seed S] [--top K] [--flows]
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

from stripesync.catalog.nullability import VIOLATIONS, Tally, load_nullability, measure
from stripesync.emulator import Emulator
from stripesync.emulator.conformance import Flows, checked_objects, typed_objects
from stripesync.emulator.generator import generate


def stored_objects(em: Emulator) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for obj_type, records in sorted(em.store.by_type.items()):
        cls = em.shapes.type_class.get(obj_type)
        if cls is None:
            continue
        for rec in records.values():
            yield obj_type, cls, rec.obj


def measure_emulator(customers: int = 100, seed: int = 0) -> dict[str, Tally]:
    em = Emulator(seed=seed)
    generate(em, customers, seed=seed)
    return measure(em.spec, load_nullability(), stored_objects(em), classes=em.shapes.classes)


def measure_flows(seed: int = 5, customers: int = 8) -> dict[str, Tally]:
    flows = Flows(seed=seed, customers=customers)
    flows.run()
    em = flows.em
    objects = typed_objects(em, checked_objects(flows))
    return measure(em.spec, load_nullability(), objects, classes=em.shapes.classes)


def report(tallies: dict[str, Tally], top: int = 3) -> str:
    lines = [
        f"{'object type':40} {'objects':>7} {'fields':>8} {'agree':>8} {'rate':>7} "
        + " ".join(f"{v:>{len(v)}}" for v in VIOLATIONS)
        + f" {'unknown':>7}"
    ]
    total = Tally(violations={})
    for obj_type, t in sorted(tallies.items()):
        v = t.violations or {}
        rate = t.agree / t.fields if t.fields else 1.0
        lines.append(
            f"{obj_type:40} {t.objects:7} {t.fields:8} {t.agree:8} {rate:7.1%} "
            + " ".join(f"{v.get(k, 0):{len(k)}}" for k in VIOLATIONS)
            + f" {t.unknown:7}"
        )
        for example, n in sorted((t.examples or {}).items(), key=lambda e: -e[1])[:top]:
            lines.append(f"    {n:6} x {example}")
        total.objects += t.objects
        total.fields += t.fields
        total.unknown += t.unknown
        assert total.violations is not None
        for k, n in v.items():
            total.violations[k] = total.violations.get(k, 0) + n
    rate = total.agree / total.fields if total.fields else 1.0
    tv = total.violations or {}
    lines.append(
        f"{'total':40} {total.objects:7} {total.fields:8} {total.agree:8} {rate:7.1%} "
        + " ".join(f"{tv.get(k, 0):{len(k)}}" for k in VIOLATIONS)
        + f" {total.unknown:7}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top", type=int, default=3, help="examples shown per type")
    parser.add_argument(
        "--flows",
        action="store_true",
        help="measure the write flows (every create route, updates, events) instead",
    )
    args = parser.parse_args(argv)
    data = load_nullability()
    if args.flows:
        print(
            f"npm stripe {data.npm_version} (API {data.api_version}); write flows on "
            f"generate(Emulator(), {args.customers}, seed={args.seed})"
        )
        print(report(measure_flows(args.seed, args.customers), args.top))
        return 0
    print(
        f"npm stripe {data.npm_version} (API {data.api_version}); "
        f"generate(Emulator(), {args.customers}, seed={args.seed})"
    )
    print(report(measure_emulator(args.customers, args.seed), args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
