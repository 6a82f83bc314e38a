"""Which layers of stripesync may import which: enforced on every module."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "stripesync"

# layer -> the stripesync layers it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    # obs: metrics and logging every layer reports into; it imports no other layer
    "obs": set(),
    "catalog": set(),
    "schema": {"catalog"},
    "db": set(),
    "stripe_api": {"catalog"},
    "emulator": {"catalog"},
    "store": {"catalog", "schema"},
    "sync": {"catalog", "schema", "store", "stripe_api"},
    "proxy": {"catalog", "db", "schema", "store", "stripe_api"},
    "http": {"catalog", "schema", "store", "stripe_api", "sync"},
    # top-level modules (cli.py, ...) may import everything
}


def _layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "stripesync" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    pkg = list(rel.parts[:-1])
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            found.append(mod)
    return found


def test_layers_import_only_what_they_may() -> None:
    violations: list[str] = []
    checked = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if len(rel.parts) < 2:
            continue  # top-level modules may import any layer
        layer = rel.parts[0]
        assert layer in ALLOWED, f"unknown layer {layer!r}: add it to ALLOWED"
        for mod in _imports(path):
            target = _layer_of(mod)
            if target is None or target == layer:
                continue
            if target == "obs":  # every layer reports into obs
                continue
            checked += 1
            if target not in ALLOWED[layer] and target in ALLOWED:
                violations.append(f"{rel}: {layer} imports {mod}")
    assert not violations, "\n".join(violations)
    assert checked > 0  # the walk did see cross-layer imports


def test_every_subpackage_is_a_known_layer() -> None:
    layers = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert layers == set(ALLOWED)
