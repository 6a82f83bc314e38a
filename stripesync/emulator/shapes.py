"""Objects shaped like Stripe's, from the SDK's class descriptions (`catalog.spec`).

Every field the SDK declares is present; unset ones are null. Fields Stripe never
leaves empty get a neutral value (`object`, booleans, counters, `metadata: {}`, nested
objects that are always there, empty embedded lists); the per-collection behaviours
(behaviours/) give the rest their meaning.
"""

from __future__ import annotations

import json
from typing import Any

from stripesync.catalog.spec import Spec, TypeDesc

# fields the SDK declares for the deleted form of an object only
_OMIT = {"deleted"}
_STR_DEFAULTS = {"currency": "usd", "country": "US"}


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
        for name, d in self.fields(cls).items():
            if name in _OMIT:
                continue
            out[name] = _default(self, d, name, stack)
        return out

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
