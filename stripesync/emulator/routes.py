"""Routes for every /v1 endpoint of the SDK, classified once at start-up.

Each `Route` says what the generic engine does with a request: list, search, retrieve,
create, update, delete, an action on one object (`/v1/invoices/{invoice}/finalize`),
a singleton (`/v1/balance`, `/v1/customers/{customer}/cash_balance`) or a static
action (`/v1/invoices/create_preview`). Which object types a route serves, which path
parameter names the object and which its parent, all come from the spec.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stripesync.catalog.spec import Spec
from stripesync.emulator.shapes import Shapes

_PARAM = re.compile(r"\{([^}]+)\}")

# Endpoints whose SDK return type is untyped (`any`): what they serve.
ANY_TYPES: dict[str, tuple[str, ...]] = {
    "/v1/customers/{}/sources": ("card", "bank_account", "source"),
    "/v1/customers/{}/sources/{}": ("card", "bank_account", "source"),
    "/v1/accounts/{}/external_accounts": ("bank_account", "card"),
    "/v1/accounts/{}/external_accounts/{}": ("bank_account", "card"),
}

LIST, SEARCH, RETRIEVE, CREATE, UPDATE, DELETE = (
    "list",
    "search",
    "retrieve",
    "create",
    "update",
    "delete",
)
ACTION, SINGLETON_GET, SINGLETON_UPDATE, STATIC_ACTION = (
    "action",
    "singleton_get",
    "singleton_update",
    "static_action",
)


def norm(template: str) -> str:
    return _PARAM.sub("{}", template)


@dataclass
class Route:
    verb: str
    template: str
    kind: str
    method: str
    params: str | None
    types: tuple[str, ...]
    cls: str | None
    target_param: str | None = None
    target_types: tuple[str, ...] = ()
    parent_param: str | None = None
    parent_types: tuple[str, ...] = ()
    list_template: str | None = None  # nested collection this route works in
    since: str | None = None  # first API version serving it (inclusive)
    until: str | None = None  # first API version no longer serving it
    handler: Callable[..., Any] | None = None  # a hand-written endpoint
    segments: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        self.segments = tuple(self.template.strip("/").split("/"))

    @property
    def primary_type(self) -> str | None:
        if self.target_types:
            return self.target_types[0]
        return self.types[0] if self.types else None

    def serves(self, version: str) -> bool:
        v = version[:10]
        if self.since is not None and v < self.since:
            return False
        return not (self.until is not None and v >= self.until)

    def path_params(self, parts: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for seg, val in zip(self.segments, parts, strict=False):
            if seg.startswith("{"):
                out[seg[1:-1]] = val
        return out

    def fill(self, template: str, path_params: dict[str, str]) -> str:
        return _PARAM.sub(lambda m: path_params.get(m.group(1), m.group(0)), template)


def build_routes(spec: Spec, shapes: Shapes) -> list[Route]:
    ops = spec.operations
    get_types: dict[str, tuple[str, ...]] = {}
    for op in ops:
        if op.verb == "GET" and op.method in ("retrieve", "retrieve_current"):
            get_types[norm(op.path)] = _types_of(op.path, op.returns_class, shapes)
    routes: list[Route] = []
    seen: set[tuple[str, str]] = set()
    for op in ops:
        key = (op.verb, op.path)
        if key in seen:
            continue
        seen.add(key)
        types = _types_of(op.path, op.returns_class, shapes)
        names = _PARAM.findall(op.path)
        segs = op.path.strip("/").split("/")
        ends_with_param = segs[-1].startswith("{")
        m = op.method
        r = Route(
            verb=op.verb,
            template=op.path,
            kind=ACTION,
            method=m,
            params=op.params,
            types=types,
            cls=op.returns_class,
        )
        if m in ("list",):
            r.kind = LIST
        elif m == "search":
            r.kind = SEARCH
        elif m in ("retrieve", "retrieve_current") or (op.verb == "GET" and m == "find"):
            r.kind = RETRIEVE if ends_with_param else SINGLETON_GET
            if m == "find":
                r.kind = STATIC_ACTION
        elif m == "create" and op.verb == "POST":
            r.kind = CREATE
        elif m == "update" and op.verb == "POST":
            r.kind = UPDATE if ends_with_param else SINGLETON_UPDATE
        elif m == "delete" and op.verb == "DELETE" and ends_with_param:
            r.kind = DELETE
        elif not names:
            r.kind = STATIC_ACTION
        # target / parent parameters
        if r.kind in (RETRIEVE, UPDATE, DELETE) or (r.kind == ACTION and names):
            r.target_param = names[-1]
            idx = segs.index("{" + names[-1] + "}")
            target_prefix = "/" + "/".join(segs[: idx + 1])
            r.target_types = get_types.get(norm(target_prefix), types) or types
            if len(names) > 1:
                r.parent_param = names[-2]
                pidx = segs.index("{" + names[-2] + "}")
                r.parent_types = get_types.get(norm("/" + "/".join(segs[: pidx + 1])), ())
                r.list_template = "/" + "/".join(segs[: pidx + 2])
        elif r.kind in (LIST, CREATE, SINGLETON_GET, SINGLETON_UPDATE, SEARCH) and names:
            r.parent_param = names[-1]
            pidx = segs.index("{" + names[-1] + "}")
            r.parent_types = get_types.get(norm("/" + "/".join(segs[: pidx + 1])), ())
            if r.kind in (LIST, CREATE):
                r.list_template = "/" + "/".join(segs[: pidx + 2])
        if r.kind == ACTION and not r.target_types:
            r.target_types = types
        routes.append(r)
    return routes


def _types_of(path: str, cls: str | None, shapes: Shapes) -> tuple[str, ...]:
    hand = ANY_TYPES.get(norm(path))
    if hand:
        return hand
    if cls and cls in shapes.class_type:
        return (shapes.class_type[cls],)
    return ()


class _Node:
    __slots__ = ("param", "routes", "static")

    def __init__(self) -> None:
        self.static: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.routes: dict[str, list[Route]] = {}


class Router:
    """Path segments in a trie; static segments win over parameters
    (`/v1/customers/search` before `/v1/customers/{customer}`)."""

    def __init__(self, routes: list[Route]) -> None:
        self.root = _Node()
        self.routes = routes
        for r in routes:
            self.add(r)

    def add(self, r: Route) -> None:
        node = self.root
        for seg in r.segments:
            if seg.startswith("{"):
                if node.param is None:
                    node.param = _Node()
                node = node.param
            else:
                node = node.static.setdefault(seg, _Node())
        node.routes.setdefault(r.verb, []).append(r)

    def match(self, path: str) -> tuple[dict[str, list[Route]], list[str]] | None:
        parts = path.strip("/").split("/")
        if any(p == "" for p in parts):
            return None
        node = self._walk(self.root, parts, 0)
        if node is None:
            return None
        return node.routes, parts

    def _walk(self, node: _Node, parts: list[str], i: int) -> _Node | None:
        if i == len(parts):
            return node if node.routes else None
        child = node.static.get(parts[i])
        if child is not None:
            found = self._walk(child, parts, i + 1)
            if found is not None:
                return found
        if node.param is not None:
            return self._walk(node.param, parts, i + 1)
        return None
