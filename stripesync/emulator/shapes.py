"""Objects shaped like Stripe's, from the SDK's class descriptions (`catalog.spec`).

Every field the SDK declares is present, unset ones null, except the ones Stripe's
TypeScript types mark as possibly left out (`optional`, `optional_nullable` in
`catalog/ts_nullability.json`): unset (null) ones are left out, as Stripe leaves
them out (`customer.sources`, `price.currency_options`, `event.account`); includable
and expandable-only ones appear when `expand[]` asks for them (expand.py). A field
with a value is never dropped. Fields Stripe never
leaves empty get a neutral value (`object`, booleans, counters, `metadata: {}`, nested
objects that are always there, empty embedded lists); the per-collection behaviours
(behaviours/) give the rest their meaning.
"""

from __future__ import annotations

import json
from typing import Any

from stripesync.catalog.nullability import load_nullability
from stripesync.catalog.spec import Spec, TypeDesc

# fields the SDK declares for the deleted form of an object only
_OMIT = {"deleted"}
_STR_DEFAULTS = {"currency": "usd", "country": "US"}
# the states of ts_nullability.json whose fields Stripe may leave out
# Only `optional` fields (`x?: T`) are left out when unset: an `optional_nullable` one
# (`x?: T | null`, e.g. customer.name, address, phone) is what Stripe's own examples send
# as null, so it stays null.
LEFT_OUT_STATES = frozenset({"optional"})


class Shapes:
    def __init__(self, spec: Spec, extra_classes: dict[str, dict[str, Any]] | None = None) -> None:
        self.spec = spec
        self.classes: dict[str, dict[str, Any]] = dict(spec.classes)
        if extra_classes:
            self.classes.update(extra_classes)
        self.type_class: dict[str, str] = {}
        self.class_type: dict[str, str] = {}
        for cls, entry in self.classes.items():
            if "." in cls:
                continue
            obj = entry["fields"].get("object")
            if obj and obj.get("t") == "enum" and len(obj["values"]) == 1:
                self.type_class.setdefault(obj["values"][0], cls)
                self.class_type[cls] = obj["values"][0]
        for obj, cls in spec.objects.items():
            self.type_class.setdefault(obj, cls)
            self.class_type.setdefault(cls, obj)
        self._templates: dict[str, str] = {}
        # SDK class -> the fields the types say are always sent and never null
        # (`customer.invoice_settings`): their defaults are built even where the SDK's
        # annotation says `Optional[...]`
        self.required: dict[str, frozenset[str]] = {}
        # SDK class -> the fields left out when unset (SDK names and wire names)
        self.left_out: dict[str, frozenset[str]] = {}
        for cls, states in load_nullability().classes.items():
            names = {n for n, st in states.items() if st in LEFT_OUT_STATES}
            names |= {n + "_" for n in names}  # the SDK's `from_` for the wire's `from`
            if names:
                self.left_out[cls] = frozenset(names)
            req = {n for n, st in states.items() if st == "required"}
            if req:
                self.required[cls] = frozenset(req | {n + "_" for n in req})

    def leave_out(self, cls: str, name: str) -> None:
        """Leave `name` out of objects of `cls` while unset (a field Stripe includes only
        when asked)."""
        self.left_out[cls] = self.left_out.get(cls, frozenset()) | {name}
        self._templates.pop(cls, None)

    def fields(self, cls: str) -> dict[str, TypeDesc]:
        entry = self.classes.get(cls)
        return entry["fields"] if entry else {}  # type: ignore[no-any-return]

    def has_field(self, cls: str, name: str) -> bool:
        return name in self.fields(cls)

    def template_json(self, cls: str) -> str:
        t = self._templates.get(cls)
        if t is None:
            t = json.dumps(self._build(cls, ()), separators=(",", ":"))
            self._templates[cls] = t
        return t

    def new(self, cls: str) -> dict[str, Any]:
        """A fresh default object of the class (no id / created yet)."""
        return json.loads(self.template_json(cls))  # type: ignore[no-any-return]

    def default_for(self, d: TypeDesc, name: str = "") -> Any:
        return _default(self, d, name, ())

    def _build(self, cls: str, stack: tuple[str, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        stack = (*stack, cls)
        required = self.required.get(cls, frozenset())
        for name, d in self.fields(cls).items():
            if name in _OMIT:
                continue
            if d.get("null") and name in required:
                d = {**d, "null": False}
            value = _default(self, d, name, stack)
            if value is None and name in self.left_out.get(cls, ()):
                continue
            out[name] = value
        return out

    def prune(self, cls: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Drop, in place, the null fields Stripe leaves out of `obj` (of SDK class
        `cls`) and of the nested objects it holds by value; returns `obj`."""
        gone = self.left_out.get(cls, frozenset())
        fields = self.fields(cls)
        for name in [n for n, v in obj.items() if v is None and n in gone]:
            del obj[name]
        for name, value in obj.items():
            d = fields.get(name)
            if d is None or not isinstance(value, dict | list):
                continue
            inner = _nested(d)
            if inner is None:
                continue
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict):
                    self.prune(inner, item)
        return obj

    def prune_type(self, obj_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        """`prune` by the object's type (`customer`); objects of unknown types unchanged."""
        cls = self.type_class.get(obj_type)
        return self.prune(cls, obj) if cls else obj

    # ---- type helpers ----------------------------------------------------------------

    def classes_of(self, d: TypeDesc) -> list[str]:
        """The resource classes a (possibly expandable / union) descriptor refers to."""
        t = d.get("t")
        if t == "class":
            return [d["name"]]
        if t in ("expandable", "listobject", "list"):
            return self.classes_of(d["of"])
        if t == "union":
            out: list[str] = []
            for o in d["of"]:
                out.extend(self.classes_of(o))
            return out
        return []

    def types_of(self, d: TypeDesc) -> list[str]:
        return [self.class_type[c] for c in self.classes_of(d) if c in self.class_type]


def _nested(d: TypeDesc) -> str | None:
    """The nested SDK class a field holds by value (alone or in a list), if any."""
    t = d.get("t")
    if t == "class" and "." in d["name"]:
        return d["name"]  # type: ignore[no-any-return]
    if t == "list":
        return _nested(d["of"])
    if t == "union":
        for o in d["of"]:
            inner = _nested(o)
            if inner is not None:
                return inner
    return None


def _default(shapes: Shapes, d: TypeDesc, name: str, stack: tuple[str, ...]) -> Any:
    t = d.get("t")
    if name == "metadata":
        return {}
    if name == "object" and t == "enum":
        return d["values"][0]
    if d.get("null"):
        return None
    if t == "bool":
        return False
    if t == "int":
        return 0
    if t == "float":
        return 0.0
    if t == "str":
        return _STR_DEFAULTS.get(name, "")
    if t == "enum":
        return d["values"][0] if d["values"] else None
    if t == "list":
        return []
    if t == "map":
        return {}
    if t == "listobject":
        return {"object": "list", "data": [], "has_more": False, "total_count": 0, "url": ""}
    if t == "class":
        cls = d["name"]
        if cls in stack or len(stack) > 6 or "." not in cls:
            # a top-level resource embedded by value is filled in by a behaviour
            return None
        return shapes._build(cls, stack)
    if t == "union":
        return _default(shapes, {**d["of"][0], "null": d.get("null")}, name, stack)
    return None
