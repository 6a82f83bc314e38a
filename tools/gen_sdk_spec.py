"""Generate stripesync/catalog/sdk_spec.json from the installed official `stripe` SDK.

The SDK is generated from Stripe's OpenAPI description and annotates every resource
field, every request parameter and every endpoint (its services call
``self._request(verb, "/v1/...")``). This script reads those sources with ``ast``
(no import-time evaluation, so the ``if TYPE_CHECKING:`` imports are no obstacle) and
writes one JSON document:

- ``operations``: every /v1 endpoint: HTTP verb, path template, SDK service and
  method, its parameter type and its return type;
- ``classes``: every resource class and nested class, with each field's type;
- ``objects``: object name (``customer``, ``checkout.session``) -> class name;
- ``params``: every request parameter TypedDict, with each field's type and whether
  it is required.

Type descriptors are small dicts: ``{"t": "str"|"int"|"float"|"bool"|"any"}``,
``{"t": "enum", "values": [...]}``, ``{"t": "list", "of": T}``, ``{"t": "map", "of": T}``,
``{"t": "class", "name": "Customer.Address"}``, ``{"t": "expandable", "of": T}``,
``{"t": "listobject", "of": T}``, ``{"t": "union", "of": [T, ...]}``; any of them may
carry ``"null": true``; int fields documented as Unix times carry ``"unix": true``;
parameters that accept ``""`` to unset carry ``"emptyable": true``.

Run it after changing the pinned SDK range:

    python tools/gen_sdk_spec.py            # writes the file
    python tools/gen_sdk_spec.py --check    # exits 1 when the file is stale
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import stripe
from stripe._object_classes import OBJECT_CLASSES

OUT = Path(__file__).resolve().parent.parent / "stripesync" / "catalog" / "sdk_spec.json"
SDK_DIR = Path(stripe.__file__).resolve().parent

TypeDesc = dict[str, Any]

PRIMS = {"str": "str", "int": "int", "float": "float", "bool": "bool"}
REQUEST_OPTIONS = {
    "api_key",
    "stripe_version",
    "stripe_account",
    "stripe_context",
    "max_network_retries",
    "idempotency_key",
    "content_type",
    "headers",
}
UNIX_HINTS = ("unix epoch", "unix timestamp", "seconds since the epoch", "unix time")


def _unparse_str(node: ast.expr) -> ast.expr:
    """Turn a string forward reference into its expression."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return ast.parse(node.value, mode="eval").body
    return node


class Resolver:
    """Resolves names in annotations of one module: nested classes first, then imports."""

    def __init__(self, module_file: Path, imports: dict[str, str]) -> None:
        self.module_file = module_file
        self.imports = imports  # local name -> class name in `classes` (top level)

    def desc(self, node: ast.expr, scope: list[str]) -> TypeDesc:
        node = _unparse_str(node)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return self._union([node.left, node.right], scope)
        if isinstance(node, ast.Constant) and node.value is None:
            return {"t": "none"}
        if isinstance(node, ast.Name):
            return self._name(node.id, scope)
        if isinstance(node, ast.Attribute):
            return self._name(node.attr, scope)
        if isinstance(node, ast.Subscript):
            base = node.value
            base_name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")
            sl = node.slice
            args = list(sl.elts) if isinstance(sl, ast.Tuple) else [sl]
            if base_name == "Optional":
                d = self.desc(args[0], scope)
                return {**d, "null": True}
            if base_name == "Union":
                return self._union(args, scope)
            if base_name == "Literal":
                values = [a.value for a in args if isinstance(a, ast.Constant)]
                if values == [True] or values == [False]:
                    return {"t": "bool"}
                return {"t": "enum", "values": values}
            if base_name in ("List", "list", "Sequence"):
                return {"t": "list", "of": self.desc(args[0], scope)}
            if base_name in ("Dict", "dict", "Mapping"):
                return {"t": "map", "of": self.desc(args[-1], scope)}
            if base_name == "UntypedStripeObject":
                return {"t": "map", "of": self.desc(args[0], scope)}
            if base_name == "ExpandableField":
                return {"t": "expandable", "of": self.desc(args[0], scope)}
            if base_name in ("ListObject", "SearchResultObject"):
                return {"t": "listobject", "of": self.desc(args[0], scope)}
            if base_name in ("NotRequired", "Required", "ClassVar", "Final"):
                return self.desc(args[0], scope)
            return {"t": "any"}
        return {"t": "any"}

    def _union(self, nodes: list[ast.expr], scope: list[str]) -> TypeDesc:
        options: list[TypeDesc] = []
        null = False
        emptyable = False
        for n in nodes:
            d = self.desc(n, scope)
            parts = d["of"] if d["t"] == "union" else [d]
            null = null or bool(d.get("null"))
            emptyable = emptyable or bool(d.get("emptyable"))
            for p in parts:
                if p["t"] == "none":
                    null = True
                    continue
                if p["t"] == "enum" and p["values"] == [""]:
                    emptyable = True
                    continue
                p = {k: v for k, v in p.items() if k not in ("null", "emptyable")}
                if p not in options:
                    options.append(p)
        # Stripe's "enum or str" is an open enum: keep the known values.
        enums = [o for o in options if o["t"] == "enum"]
        if enums and any(o == {"t": "str"} for o in options) and len(options) == 2:
            options = [{**enums[0], "open": True}]
        out: TypeDesc
        if not options:
            out = {"t": "none"}
        elif len(options) == 1:
            out = dict(options[0])
        else:
            out = {"t": "union", "of": options}
        if null:
            out["null"] = True
        if emptyable:
            out["emptyable"] = True
        return out

    def _name(self, name: str, scope: list[str]) -> TypeDesc:
        if name in PRIMS:
            return {"t": PRIMS[name]}
        if name in ("Any", "object", "StripeObject", "UntypedStripeObject"):
            return {"t": "any"}
        if name == "None":
            return {"t": "none"}
        # nested classes: innermost scope first
        for i in range(len(scope), 0, -1):
            candidate = ".".join([*scope[:i], name])
            if candidate in self.local_classes:
                return {"t": "class", "name": candidate}
        if name in self.local_classes:
            return {"t": "class", "name": name}
        if name in self.imports:
            return {"t": "class", "name": self.imports[name]}
        return {"t": "any"}

    local_classes: set[str] = set()


def _docstring_after(body: list[ast.stmt], index: int) -> str:
    if index + 1 < len(body):
        nxt = body[index + 1]
        if (
            isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            return nxt.value.value
    return ""


def _type_checking_imports(tree: ast.Module) -> dict[str, tuple[str, str]]:
    """local name -> (module, class) for every `from X import Y` of the module."""
    found: dict[str, tuple[str, str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stripe"):
            for alias in node.names:
                found[alias.asname or alias.name] = (node.module, alias.name)
    return found


def _module_file(module: str) -> Path | None:
    rel = module.split(".")[1:]
    path = SDK_DIR.joinpath(*rel).with_suffix(".py")
    return path if path.exists() else None


class Generator:
    def __init__(self) -> None:
        self.classes: dict[str, dict[str, Any]] = {}
        self.params: dict[str, dict[str, Any]] = {}
        self.module_class_names: dict[tuple[str, str], str] = {}
        self._parsed: dict[Path, ast.Module] = {}

    def parse(self, path: Path) -> ast.Module:
        if path not in self._parsed:
            self._parsed[path] = ast.parse(path.read_text(), filename=str(path))
        return self._parsed[path]

    # ---- resources -------------------------------------------------------------------

    def resource_modules(self) -> dict[str, tuple[str, str]]:
        """object name -> (module, class name)."""
        out: dict[str, tuple[str, str]] = {}
        for obj, (module, cls) in OBJECT_CLASSES.items():
            if obj in ("list", "search_result"):
                continue
            out[obj] = (module, cls)
        return out

    def global_name(self, module: str, cls: str) -> str:
        """A unique name for a top-level SDK class (Session exists in several modules)."""
        key = (module, cls)
        if key not in self.module_class_names:
            mod = importlib.import_module(module)
            obj_name = getattr(getattr(mod, cls, None), "OBJECT_NAME", None)
            if isinstance(obj_name, str) and obj_name:
                name = "".join(p[:1].upper() + p[1:] for p in obj_name.replace(".", "_").split("_"))
                # keep the SDK's own spelling when the object has one word
                name = cls if "." not in obj_name else name
            else:
                parts = module.split(".")
                prefix = "".join(p.capitalize() for p in parts[1:-1] if not p.startswith("_"))
                name = prefix + cls
            self.module_class_names[key] = name
        return self.module_class_names[key]

    def add_class_tree(self, module: str, cls_name: str) -> str:
        gname = self.global_name(module, cls_name)
        if gname in self.classes:
            return gname
        path = _module_file(module)
        assert path is not None, module
        tree = self.parse(path)
        imports = {}
        for local, (mod, name) in _type_checking_imports(tree).items():
            if mod.startswith("stripe.params") or mod in ("stripe._stripe_object",):
                continue
            mfile = _module_file(mod)
            if mfile is None:
                continue
            imports[local] = (mod, name)
        node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name)
        local_classes: set[str] = set()

        def collect(c: ast.ClassDef, prefix: list[str]) -> None:
            qual = [*prefix, c.name]
            local_classes.add(".".join(qual))
            for sub in c.body:
                if isinstance(sub, ast.ClassDef):
                    collect(sub, qual)

        collect(node, [])
        pending: list[tuple[str, str]] = []

        resolver = Resolver(path, {})
        resolver.local_classes = local_classes

        class ImportMap(dict):  # type: ignore[type-arg]
            def __missing__(inner, key: str) -> str:
                raise KeyError(key)

        imap = ImportMap()
        for local, (mod, name) in imports.items():
            if local in local_classes:
                continue
            try:
                target_mod = importlib.import_module(mod)
            except ImportError:
                continue
            if not isinstance(getattr(target_mod, name, None), type):
                continue
            imap[local] = self.global_name(mod, name)
            pending.append((mod, name))
        resolver.imports = imap

        def emit(c: ast.ClassDef, prefix: list[str]) -> None:
            qual = [*prefix, c.name]
            local_qual = ".".join(qual)
            out_name = gname + local_qual[len(cls_name) :]
            fields: dict[str, TypeDesc] = {}
            for i, stmt in enumerate(c.body):
                if isinstance(stmt, ast.ClassDef):
                    emit(stmt, qual)
                elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    ann = stmt.annotation
                    ann_base = _unparse_str(ann)
                    if (
                        isinstance(ann_base, ast.Subscript)
                        and getattr(ann_base.value, "id", "") == "ClassVar"
                    ):
                        continue
                    d = resolver.desc(ann, qual)
                    d = self._rename_locals(d, cls_name, gname)
                    doc = _docstring_after(c.body, i).lower()
                    if _is_int(d) and any(h in doc for h in UNIX_HINTS):
                        d["unix"] = True
                    fields[stmt.target.id] = d
            entry: dict[str, Any] = {"fields": fields}
            if not prefix:
                entry["module"] = module
                entry["sdk_class"] = cls_name
            self.classes[out_name] = entry

        emit(node, [])
        for mod, name in pending:
            with contextlib.suppress(StopIteration):
                self.add_class_tree(mod, name)
        return gname

    @staticmethod
    def _rename_locals(d: TypeDesc, local_root: str, gname: str) -> TypeDesc:
        if local_root == gname:
            return d

        def walk(x: Any) -> Any:
            if isinstance(x, dict):
                y = {k: walk(v) for k, v in x.items()}
                if y.get("t") == "class" and (
                    y["name"] == local_root or y["name"].startswith(local_root + ".")
                ):
                    y["name"] = gname + y["name"][len(local_root) :]
                return y
            if isinstance(x, list):
                return [walk(v) for v in x]
            return x

        return walk(d)  # type: ignore[no-any-return]

    # ---- params ----------------------------------------------------------------------

    @staticmethod
    def params_prefix(module: str) -> str:
        """`stripe.params.issuing._card_list_params` -> "issuing." (names repeat across
        sub-packages: issuing and financial_connections both have TransactionListParams)."""
        parts = module.split(".")[2:-1]
        return "".join(p + "." for p in parts)

    def add_params_module(self, module: str) -> None:
        path = _module_file(module)
        if path is None:
            return
        tree = self.parse(path)
        prefix = self.params_prefix(module)
        local = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
        resolver = Resolver(path, {})
        resolver.local_classes = local
        for node in tree.body:
            if not isinstance(node, ast.ClassDef) or prefix + node.name in self.params:
                continue
            fields: dict[str, Any] = {}
            for i, stmt in enumerate(node.body):
                if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                    continue
                name = stmt.target.id
                if name in REQUEST_OPTIONS:
                    continue
                ann = _unparse_str(stmt.annotation)
                required = not (
                    isinstance(ann, ast.Subscript) and getattr(ann.value, "id", "") == "NotRequired"
                )
                d = _params_refs(resolver.desc(stmt.annotation, []), prefix)
                doc = _docstring_after(node.body, i).lower()
                if _is_int(d) and any(h in doc for h in UNIX_HINTS):
                    d["unix"] = True
                if required:
                    d["required"] = True
                fields[name] = d
            self.params[prefix + node.name] = {"fields": fields}

    # ---- operations ------------------------------------------------------------------

    def operations(self) -> list[dict[str, Any]]:
        ops: list[dict[str, Any]] = []
        for path in sorted(SDK_DIR.rglob("*_service.py")):
            rel = path.relative_to(SDK_DIR)
            if rel.parts[0] in ("v2", "params", "events") or "v2" in rel.parts:
                continue
            tree = self.parse(path)
            imports = _type_checking_imports(tree)
            for cls in tree.body:
                if not isinstance(cls, ast.ClassDef):
                    continue
                for fn in cls.body:
                    if not isinstance(fn, ast.FunctionDef) or fn.name.startswith("_"):
                        continue
                    call = _find_request_call(fn)
                    if call is None:
                        continue
                    verb, template = call
                    if not template.startswith("/v1/"):
                        continue
                    params_type = None
                    for arg in [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]:
                        if arg.arg == "params" and arg.annotation is not None:
                            params_type = _first_name(_unparse_str(arg.annotation))
                    if params_type and params_type in imports:
                        params_module = imports[params_type][0]
                        self.add_params_module(params_module)
                        params_type = self.params_prefix(params_module) + params_type
                    returns = _return_desc(fn, imports, self)
                    ops.append(
                        {
                            "service": cls.name,
                            "method": fn.name,
                            "verb": verb,
                            "path": template,
                            "params": params_type,
                            "returns": returns,
                        }
                    )
        ops.sort(key=lambda o: (o["path"], o["verb"], o["service"], o["method"]))
        return ops


def _is_int(d: TypeDesc) -> bool:
    return d.get("t") == "int"


def _params_refs(d: TypeDesc, prefix: str) -> TypeDesc:
    """In params, a class reference names another TypedDict of the same module."""
    if not prefix:
        return d

    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            y = {k: walk(v) for k, v in x.items()}
            if y.get("t") == "class":
                y["name"] = prefix + y["name"]
            return y
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    return walk(d)  # type: ignore[no-any-return]


def _first_name(node: ast.expr) -> str | None:
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and n.id not in ("Optional", "None"):
            return n.id
        if isinstance(n, ast.Constant) and isinstance(n.value, str):
            return _first_name(ast.parse(n.value, mode="eval").body)
    return None


def _find_request_call(fn: ast.FunctionDef) -> tuple[str, str] | None:
    for n in ast.walk(fn):
        if (
            isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute)
            and n.func.attr in ("_request", "_request_stream")
            and len(n.args) >= 2
        ):
            verb_node, path_node = n.args[0], n.args[1]
            if not (isinstance(verb_node, ast.Constant) and isinstance(verb_node.value, str)):
                continue
            if isinstance(path_node, ast.Call) and isinstance(path_node.func, ast.Attribute):
                path_node = path_node.func.value
            if isinstance(path_node, ast.Constant) and isinstance(path_node.value, str):
                return verb_node.value.upper(), path_node.value
    return None


def _return_desc(
    fn: ast.FunctionDef, imports: dict[str, tuple[str, str]], gen: Generator
) -> TypeDesc:
    if fn.returns is None:
        return {"t": "any"}
    node = _unparse_str(fn.returns)
    is_list = False
    if isinstance(node, ast.Subscript) and getattr(node.value, "id", "") in (
        "ListObject",
        "SearchResultObject",
    ):
        is_list = True
        node = _unparse_str(node.slice)
    if isinstance(node, ast.Subscript) and getattr(node.value, "id", "") == "Union":
        # customer sources and external accounts: one of several classes
        sl = node.slice
        members = [
            _return_class(m, imports, gen) for m in (sl.elts if isinstance(sl, ast.Tuple) else [sl])
        ]
        u: TypeDesc = {"t": "union", "of": [m for m in members if m]}
        return {"t": "listobject", "of": u} if is_list else u
    if isinstance(node, ast.Subscript):  # e.g. StripeStreamResponse
        return {"t": "any"}
    d = _return_class(node, imports, gen)
    if d is None:
        return {"t": "any"}
    return {"t": "listobject", "of": d} if is_list else d


def _return_class(
    node: ast.expr, imports: dict[str, tuple[str, str]], gen: Generator
) -> TypeDesc | None:
    name = _first_name(_unparse_str(node))
    if name is None or name not in imports:
        return None
    mod, cls = imports[name]
    try:
        target = getattr(importlib.import_module(mod), cls)
    except (ImportError, AttributeError):
        return None
    if not isinstance(target, type) or not hasattr(target, "OBJECT_NAME"):
        return None
    return {"t": "class", "name": gen.add_class_tree(mod, cls)}


def generate() -> dict[str, Any]:
    gen = Generator()
    objects: dict[str, str] = {}
    for obj, (module, cls) in sorted(gen.resource_modules().items()):
        objects[obj] = gen.add_class_tree(module, cls)
    ops = gen.operations()
    return {
        "generator": "tools/gen_sdk_spec.py",
        "sdk_version": stripe.VERSION,
        "api_version": stripe.api_version,
        "objects": objects,
        "operations": ops,
        "classes": dict(sorted(gen.classes.items())),
        "params": dict(sorted(gen.params.items())),
    }


def render(spec: dict[str, Any]) -> str:
    return json.dumps(spec, indent=None, separators=(",", ":"), sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail when the file is stale")
    args = parser.parse_args(argv)
    text = render(generate())
    if args.check:
        current = OUT.read_text() if OUT.exists() else ""
        if current != text:
            print(f"{OUT} is stale: run python tools/gen_sdk_spec.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(text) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
