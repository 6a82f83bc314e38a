"""Generate stripesync/catalog/ts_nullability.json from the npm `stripe` package's types.

The Python SDK annotates a field that Stripe may leave out and a field that Stripe
sends as null alike (``Optional[T]``). The TypeScript declarations of the npm package
tell them apart: ``field: T | null`` is always sent and may be null, ``field?: T`` is
left out unless expanded or included. This script:

1. installs the pinned npm package and the TypeScript compiler into tools/ts-stripe
   (``npm ci``; the versions are in tools/ts-stripe/package.json and its lock file);
2. runs tools/ts_nullability.mjs, which parses every ``.d.ts`` file with the
   compiler and lists each interface's properties (optional? nullable? which
   interfaces does the type name?);
3. matches the interfaces to the classes of sdk_spec.json: a top-level class by its
   ``object`` value, a nested class by following the same field from a matched class
   (``Customer.invoice_settings`` -> ``Customer.InvoiceSettings``; ``Customer.address``
   -> the shared ``Address`` interface);
4. writes, per SDK class, each field's state: ``required`` (always sent, never null),
   ``nullable`` (always sent, may be null), ``optional`` (may be left out) or
   ``optional_nullable``.

Run it after moving the pinned npm version (it must carry the API version of the
pinned Python SDK, sdk_spec.json's ``api_version``):

    python tools/gen_ts_nullability.py            # writes the file
    python tools/gen_ts_nullability.py --check    # exits 1 when the file is stale
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOOL_DIR = ROOT / "tools" / "ts-stripe"
SCRIPT = ROOT / "tools" / "ts_nullability.mjs"
SDK_SPEC = ROOT / "stripesync" / "catalog" / "sdk_spec.json"
OUT = ROOT / "stripesync" / "catalog" / "ts_nullability.json"
COMMAND = "python tools/gen_ts_nullability.py"

STATES = ("required", "nullable", "optional", "optional_nullable")


def pinned_versions() -> dict[str, str]:
    deps: dict[str, str] = json.loads((TOOL_DIR / "package.json").read_text())["dependencies"]
    return deps


def ensure_installed() -> Path:
    """node_modules/stripe at the pinned version (npm ci from the lock file otherwise)."""
    pkg_dir = TOOL_DIR / "node_modules" / "stripe"
    wanted = pinned_versions()
    installed = {}
    for name in wanted:
        manifest = TOOL_DIR / "node_modules" / name / "package.json"
        if manifest.exists():
            installed[name] = json.loads(manifest.read_text())["version"]
    if installed != wanted:
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("npm is needed to install the npm stripe package")
        subprocess.run(
            [npm, "ci", "--prefix", str(TOOL_DIR), "--no-audit", "--no-fund"],
            check=True,
            stdout=sys.stderr,
        )
    return pkg_dir


def read_interfaces(pkg_dir: Path) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is needed to run tools/ts_nullability.mjs")
    out = subprocess.run(
        [node, str(SCRIPT), str(pkg_dir)], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def state(field: dict[str, Any]) -> str:
    if field["optional"]:
        return "optional_nullable" if field["nullable"] else "optional"
    return "nullable" if field["nullable"] else "required"


def classes_of(d: dict[str, Any]) -> list[str]:
    """The SDK classes a field's type descriptor names (through lists, maps, unions)."""
    t = d.get("t")
    if t == "class":
        return [d["name"]]
    if t in ("expandable", "listobject", "list", "map"):
        return classes_of(d["of"])
    if t == "union":
        out: list[str] = []
        for o in d["of"]:
            out.extend(classes_of(o))
        return out
    return []


def wire_name(name: str, ts_fields: dict[str, Any]) -> str:
    """The SDK spells fields named by Python keywords with a trailing _ (`in_`)."""
    if name.endswith("_") and name not in ts_fields and name[:-1] in ts_fields:
        return name[:-1]
    return name


def _is_deleted_form(iface: dict[str, Any]) -> bool:
    deleted = iface["fields"].get("deleted")
    return bool(deleted) and not deleted["optional"]


def _ts_name(ts_id: str) -> str:
    return ts_id.split("#", 1)[1]


def top_level_matches(
    spec: dict[str, Any], interfaces: dict[str, Any]
) -> tuple[dict[str, str], list[str]]:
    """SDK class -> interface id, by `object` value; and the objects the types lack."""
    by_object: dict[str, list[str]] = {}
    for ts_id, iface in interfaces.items():
        obj = iface.get("object")
        if (
            obj is None
            or ts_id.startswith("resources/V2/")
            or _is_deleted_form(iface)
            or "Params" in ts_id  # request parameters that name an object type
        ):
            continue
        by_object.setdefault(obj, []).append(ts_id)
    matched: dict[str, str] = {}
    missing: list[str] = []
    ambiguous: dict[str, list[str]] = {}
    for obj, cls in spec["objects"].items():
        candidates = by_object.get(obj, [])
        if not candidates:
            missing.append(obj)
            continue
        sdk_class = spec["classes"][cls].get("sdk_class", cls)
        # several interfaces may carry one object value: prefer the SDK's class name,
        # then a top-level interface with an id
        chosen = min(
            candidates,
            key=lambda c: (
                _ts_name(c).split(".")[-1] not in (sdk_class, sdk_class + "Base"),
                "." in _ts_name(c),
                "id" not in interfaces[c]["fields"],
                c,
            ),
        )
        if len(candidates) > 1:
            ambiguous[obj] = candidates
        matched.setdefault(cls, chosen)
    for obj, candidates in sorted(ambiguous.items()):
        chosen = matched[spec["objects"][obj]]
        print(f"{obj}: {chosen} (of {len(candidates)} interfaces)", file=sys.stderr)
    return matched, sorted(missing)


def match_nested(
    spec: dict[str, Any], interfaces: dict[str, Any], matched: dict[str, str]
) -> dict[str, str]:
    """Follow fields from matched classes to match the classes they name."""
    classes = spec["classes"]
    ts_object_class = {ts_id: cls for cls, ts_id in matched.items()}
    queue = deque(matched)
    while queue:
        cls = queue.popleft()
        iface = interfaces[matched[cls]]
        for name, d in classes[cls]["fields"].items():
            ts_field = iface["fields"].get(wire_name(name, iface["fields"]))
            if ts_field is None:
                continue
            refs = [r for r in ts_field.get("refs", []) if not _is_deleted_form(interfaces[r])]
            targets = [c for c in classes_of(d) if c in classes]
            if not refs or not targets:
                continue
            for target in targets:
                if target in matched:
                    continue
                if len(targets) == 1 and len(refs) == 1:
                    ref = refs[0]
                else:
                    # a union: pair the members by name
                    last = target.split(".")[-1]
                    named = [r for r in refs if _ts_name(r).split(".")[-1] == last]
                    if len(named) != 1:
                        continue
                    ref = named[0]
                if ref in ts_object_class and ts_object_class[ref] != target:
                    continue  # a top-level object, matched by its object value
                matched[target] = ref
                queue.append(target)
    return matched


def generate() -> dict[str, Any]:
    spec = json.loads(SDK_SPEC.read_text())
    raw = read_interfaces(ensure_installed())
    interfaces: dict[str, Any] = raw["interfaces"]
    matched, missing_objects = top_level_matches(spec, interfaces)
    matched = match_nested(spec, interfaces, matched)
    out_classes: dict[str, Any] = {}
    for cls in sorted(matched):
        ts_id = matched[cls]
        ts_fields = interfaces[ts_id]["fields"]
        entry: dict[str, Any] = {
            "ts": ts_id,
            "fields": {name: state(f) for name, f in sorted(ts_fields.items())},
        }
        sdk_fields = {wire_name(n, ts_fields) for n in spec["classes"][cls]["fields"]}
        sdk_only = sorted(sdk_fields - set(ts_fields))
        if sdk_only:
            entry["sdk_only"] = sdk_only
        out_classes[cls] = entry
    data_classes = {
        c
        for c, e in spec["classes"].items()
        if e["fields"] and ("." in c or c in spec["objects"].values())
    }
    return {
        "generator": "tools/gen_ts_nullability.py",
        "command": COMMAND,
        "npm_package": "stripe",
        "npm_version": raw["npm_version"],
        "api_version": raw["api_version"],
        "sdk_api_version": spec["api_version"],
        "typescript_version": raw["typescript_version"],
        "states": {
            "required": "always sent, never null (`field: T`)",
            "nullable": "always sent, may be null (`field: T | null`)",
            "optional": "may be left out, e.g. unless expanded or included (`field?: T`)",
            "optional_nullable": "may be left out, may be null (`field?: T | null`)",
        },
        "objects_missing": missing_objects,
        "classes_unmatched": sorted(data_classes - set(matched)),
        "classes": out_classes,
    }


def render(data: dict[str, Any]) -> str:
    """One line per class, so that a regeneration's diff reads class by class."""
    head = {k: v for k, v in data.items() if k != "classes"}
    lines = [json.dumps(head, separators=(",", ":"))[:-1] + ',"classes":{']
    items = list(data["classes"].items())
    for i, (cls, entry) in enumerate(items):
        sep = "," if i < len(items) - 1 else ""
        lines.append(json.dumps(cls) + ":" + json.dumps(entry, separators=(",", ":")) + sep)
    lines.append("}}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail when the file is stale")
    args = parser.parse_args(argv)
    data = generate()
    if data["api_version"] != data["sdk_api_version"]:
        print(
            f"note: npm stripe {data['npm_version']} pins {data['api_version']}, "
            f"the Python SDK {data['sdk_api_version']}",
            file=sys.stderr,
        )
    text = render(data)
    json.loads(text)  # the line layout must stay valid JSON
    if args.check:
        current = OUT.read_text() if OUT.exists() else ""
        if current != text:
            print(f"{OUT} is stale: run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(
        f"wrote {OUT} ({len(text) // 1024} KiB): {len(data['classes'])} classes, "
        f"{len(data['objects_missing'])} objects missing from the types, "
        f"{len(data['classes_unmatched'])} SDK classes unmatched"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
