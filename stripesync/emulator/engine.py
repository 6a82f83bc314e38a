"""The emulator's core: state, and one request in, one response out (no socket I/O).

`Emulator.handle(Request) -> Response` authenticates, rate-limits, routes, checks the
parameters, honours idempotency keys and runs the generic handler of the route kind
(list, retrieve, create, update, delete, action, singleton), with the per-collection
hooks of `registry` where a collection needs Stripe's own semantics. The ASGI app
(app.py) adds only what needs time or sockets: latency and injected failures.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from stripesync.catalog.spec import Spec, load_spec
from stripesync.emulator import registry
from stripesync.emulator.controls import Clock, Config, Faults, Permissions, RateLimiter
from stripesync.emulator.errors import StripeError
from stripesync.emulator.formcodec import decode, parse_query
from stripesync.emulator.ids import IdMaker
from stripesync.emulator.params import UNSET, ParamChecker
from stripesync.emulator.routes import (
    ACTION,
    CREATE,
    DELETE,
    LIST,
    RETRIEVE,
    SEARCH,
    SINGLETON_GET,
    SINGLETON_UPDATE,
    STATIC_ACTION,
    UPDATE,
    Route,
    Router,
    build_routes,
    norm,
)
from stripesync.emulator.shapes import Shapes
from stripesync.emulator.store import Record, Store, dumps
from stripesync.emulator.webhooks import Webhooks, matches

log = logging.getLogger("stripesync.emulator")

_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(\.[a-z_]+)?\Z")
_MISSING = object()
PLATFORM_ACCOUNT = "acct_1EmulatorPlatform0"
REQUEST_LOG_SIZE = 50_000  # API requests kept in Emulator.requests


@dataclass
class Request:
    method: str
    path: str
    query: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One API request as the request log keeps it."""

    method: str
    path: str
    query: str  # the query string as sent
    status: int
    listed: list[str]  # the ids of the objects a list page served, in order
    at: float  # when it was answered (time.monotonic(), seconds)


@dataclass
class Response:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Call:
    """One request being served (or an internal operation: generator, load)."""

    em: Emulator
    route: Route | None = None
    path_params: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    request_id: str | None = None
    idempotency_key: str | None = None
    key: str = ""
    listed: list[str] | None = None  # ids a list page served (the request log keeps them)

    @property
    def now(self) -> int:
        return self.em.clock.now()

    def param(self, name: str, default: Any = None) -> Any:
        return self.params.get(name, default)

    def pp(self, name: str | None) -> str:
        return self.path_params.get(name or "", "")


@dataclass
class _Idem:
    fingerprint: tuple[Any, ...]
    status: int
    body: bytes
    created: int


class Emulator:
    """The whole emulated Stripe account."""

    def __init__(
        self, config: Config | None = None, *, seed: int | None = None, spec: Spec | None = None
    ) -> None:
        from stripesync.emulator import behaviours, legacy  # registers the hooks

        self.spec = spec or load_spec()
        self.initial_config = config or Config()
        self.config = Config(**self.initial_config.as_dict())
        self.seed = seed
        self.shapes = Shapes(self.spec, {**legacy.CLASSES, **legacy.event_class(self.spec)})
        self.checker = ParamChecker({**self.spec.params, **legacy.PARAMS})
        routes = build_routes(self.spec, self.shapes)
        routes.extend(legacy.routes(self.shapes))
        for r in routes:
            hook = registry.ENDPOINTS.get((r.verb, norm(r.template)))
            if hook is not None and r.handler is None:
                r.handler = hook
        self.routes = routes
        self.router = Router(routes)
        self.event_types: set[str] = set(behaviours.EVENT_TYPES) | set(legacy.EVENT_TYPES)
        self.auto_lists = self._auto_lists_table()
        self.includable = self._includable_table()
        # (parent type, field) -> the nested singleton route serving it (a customer's
        # `cash_balance`): Stripe sends such a field only when `expand[]` asks for it
        self.included = self._included_singletons()
        for (parent_type, fld), _route in self.included.items():
            cls = self.shapes.type_class.get(parent_type)
            if cls:
                self.shapes.leave_out(cls, fld)
        # invoice items have no `created` but a `date` ("time at which the invoice item
        # was created"), and Stripe lists them newest first by it
        self.ordered_types = {
            t
            for t, cls in self.shapes.type_class.items()
            if not {"created", "date"} & set(self.shapes.fields(cls))
        }
        self.webhooks = Webhooks(self)  # lives as long as the emulator; reset() empties it
        self.reset()

    # ---- state -----------------------------------------------------------------------

    def reset(self) -> None:
        self.config = Config(**self.initial_config.as_dict())
        self.store = Store()
        self.store.ordered_types = self.ordered_types
        self.ids = IdMaker(self.seed)
        self.clock = Clock()
        self.limiter = RateLimiter()
        self.faults = Faults(self.seed)
        self.permissions = Permissions()
        self.idempotency: dict[tuple[str, str], _Idem] = {}
        self.responses: Counter[int] = Counter()  # answers by status, for stats
        # the latest API requests: what tests and benchmarks check was asked
        self.requests: deque[LoggedRequest] = deque(maxlen=REQUEST_LOG_SIZE)
        self.webhooks.reset()

    @property
    def default_version(self) -> str:
        return self.config.default_api_version or self.spec.api_version

    def internal_call(self) -> Call:
        return Call(self, version=self.default_version)

    # ---- the request path ------------------------------------------------------------

    def handle(self, req: Request) -> Response:
        rid = self.ids.request_id()
        listed: list[str] = []
        try:
            status, body, extra = self._handle(req, rid, listed)
        except StripeError as e:
            status, body, extra = e.status, e.to_bytes(), list(e.headers.items())
        except Exception:
            log.exception("emulator: unexpected error on %s %s", req.method, req.path)
            e = StripeError.api_error(500)
            status, body, extra = e.status, e.to_bytes(), []
        self.responses[status] += 1
        self.requests.append(
            LoggedRequest(
                req.method, req.path, req.query.decode("latin-1"), status, listed, time.monotonic()
            )
        )
        return Response(status, body, [("request-id", rid), *extra])

    def _handle(
        self, req: Request, rid: str, listed: list[str]
    ) -> tuple[int, bytes, list[tuple[str, str]]]:
        key = self._authenticate(req.headers)
        if not self.limiter.allow(key, self.config.rate_limit):
            raise StripeError(
                429,
                "Request rate limit exceeded. Learn more about rate limits here "
                "https://stripe.com/docs/rate-limits.",
                code="rate_limit",
                headers={"stripe-should-retry": "true"},
            )
        version = req.headers.get("stripe-version") or self.default_version
        if not _VERSION.match(version):
            raise StripeError.invalid(f"Invalid Stripe API version: {version}")
        method = req.method.upper()
        found = self.router.match(req.path)
        route: Route | None = None
        parts: list[str] = []
        if found is not None:
            by_verb, parts = found
            route = next((r for r in by_verb.get(method, ()) if r.serves(version)), None)
        if route is None:
            raise StripeError.unknown_url(method, req.path)
        self._authorize(key, route, method)
        pairs = parse_query(req.query)
        if req.body and method == "POST":
            pairs += parse_query(req.body)
        raw = decode(pairs)
        headers = [("stripe-version", version)]
        idem_key = req.headers.get("idempotency-key") if method == "POST" else None
        fingerprint: tuple[Any, ...] = ()
        if idem_key is not None:
            if len(idem_key) > 255:
                raise StripeError.invalid(
                    "Idempotency keys must be at most 255 characters long.",
                    param="idempotency_key",
                )
            headers.append(("idempotency-key", idem_key))
            fingerprint = (method, req.path, tuple(sorted(pairs)))
            stored = self.idempotency.get((key, idem_key))
            if stored is not None and stored.created >= self.clock.now() - 86400:
                if stored.fingerprint != fingerprint:
                    raise StripeError(
                        400,
                        "Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with. Try using a key other than "
                        f"'{idem_key}' if you meant to execute a different request.",
                        type="idempotency_error",
                    )
                return stored.status, stored.body, [*headers, ("idempotent-replayed", "true")]
        call = Call(
            self,
            route=route,
            path_params=route.path_params(parts),
            version=version,
            request_id=rid,
            idempotency_key=idem_key,
            key=key,
        )
        try:
            body = self.dispatch(call, raw)
            listed.extend(call.listed or ())
        except StripeError as e:
            if idem_key is not None and not e.validation and e.status < 500:
                self.idempotency[(key, idem_key)] = _Idem(
                    fingerprint, e.status, e.to_bytes(), self.clock.now()
                )
            raise
        if idem_key is not None:
            self.idempotency[(key, idem_key)] = _Idem(fingerprint, 200, body, self.clock.now())
        return 200, body, headers

    def _authenticate(self, headers: dict[str, str]) -> str:
        auth = headers.get("authorization", "").strip()
        if not auth:
            raise StripeError(
                401,
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for "
                "details, or we can help at https://support.stripe.com/.",
            )
        key = ""
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            key = value.strip()
        elif scheme.lower() == "basic":
            try:
                key = base64.b64decode(value.strip()).decode().split(":", 1)[0]
            except (ValueError, UnicodeDecodeError):
                key = ""
        allowed = self.config.allowed_keys
        ok = (
            key in allowed
            if allowed is not None
            else key.startswith(("sk_test_", "rk_test_")) and len(key) > 8
        )
        if not ok:
            raise StripeError(401, f"Invalid API Key provided: {redact(key)}")
        return key

    def _authorize(self, key: str, route: Route, method: str) -> None:
        if not key.startswith("rk_"):
            return
        coll = route.primary_type or "account"
        write = method != "GET"
        if not self.permissions.allowed(key, coll, write):
            perm = f"rak_{coll.replace('.', '_')}_{'write' if write else 'read'}"
            raise StripeError(
                403,
                f"The provided key '{redact(key)}' does not have the required permissions "
                f"for this endpoint on account '{PLATFORM_ACCOUNT}'. Having the '{perm}' "
                "permission would allow this request to continue.",
            )

    # ---- dispatch --------------------------------------------------------------------

    def dispatch(self, call: Call, raw: dict[str, Any]) -> bytes:
        route = call.route
        assert route is not None
        call.params = self.checker.check(route.params, raw)
        if route.handler is not None:
            return self.render(route.handler(call), call)
        kind = route.kind
        if kind == LIST:
            from stripesync.emulator.lists import list_route

            return list_route(call)
        if kind == SEARCH:
            from stripesync.emulator.lists import search_route

            return search_route(call)
        if kind == RETRIEVE:
            return self.render(self.lookup(call, allow_deleted=True), call)
        if kind == CREATE:
            return self.render(self.create(call), call)
        if kind == UPDATE:
            return self.render(self.update(call, self.lookup(call)), call)
        if kind == DELETE:
            return self.render(self.delete(call, self.lookup(call)), call)
        if kind == ACTION:
            return self.render(self.action(call), call)
        if kind in (SINGLETON_GET, SINGLETON_UPDATE):
            rec = self.singleton(call)
            if kind == SINGLETON_UPDATE:
                self.update(call, rec)
            return self.render(rec, call)
        if kind == STATIC_ACTION:
            return self.render(self.transient(call), call)
        raise StripeError.unknown_url(route.verb, route.template)

    def render(self, result: Any, call: Call) -> bytes:
        expand = call.params.get("expand") if call.params else None
        if isinstance(result, bytes):
            return result
        if isinstance(result, Record):
            if not expand:
                return result.to_bytes()
            obj = result.copy()
        else:
            obj = result
        if expand:
            from stripesync.emulator.expand import expand_object

            expand_object(self, obj, expand)
        return dumps(obj)

    # ---- lookups ---------------------------------------------------------------------

    def check_parent(self, call: Call) -> str | None:
        route = call.route
        assert route is not None
        if not route.parent_param:
            return None
        pid = call.pp(route.parent_param)
        if route.parent_types and self.store.find_any(pid, list(route.parent_types)) is None:
            raise StripeError.missing(route.parent_types[0], pid, param=None)
        return pid

    def lookup(self, call: Call, *, allow_deleted: bool = False) -> Record | dict[str, Any]:
        """The object a route's path names (404 when absent)."""
        route = call.route
        assert route is not None and route.target_param
        oid = call.pp(route.target_param)
        self.check_parent(call)
        types = list(route.target_types)
        list_path = (
            route.fill(route.list_template, call.path_params) if route.list_template else None
        )
        for t in types:
            rec = self.store.get(t, oid)
            if rec is not None and (list_path is None or list_path in rec.lists):
                return rec
        if allow_deleted:
            for t in types:
                rec = self.store.get_deleted(t, oid)
                if rec is not None and registry.get(t).retrieve_deleted:
                    return {"id": oid, "object": rec.obj.get("object", t), "deleted": True}
        raise StripeError.missing(types[0] if types else "object", oid)

    def require(self, call: Call, lookup: Record | dict[str, Any]) -> Record:
        if isinstance(lookup, Record):
            return lookup
        route = call.route
        assert route is not None
        raise StripeError.missing(route.target_types[0], str(lookup.get("id")))

    def get(self, obj_type: str, obj_id: str) -> Record | None:
        return self.store.get(obj_type, obj_id)

    def find(self, obj_id: str, types: list[str] | None = None) -> Record | None:
        return self.store.find_any(obj_id, types)

    # ---- objects ---------------------------------------------------------------------

    def cls_of(self, obj_type: str) -> str:
        cls = self.shapes.type_class.get(obj_type)
        if cls is None:
            raise KeyError(obj_type)
        return cls

    def new_object(self, obj_type: str, **values: Any) -> dict[str, Any]:
        """A default object of the type with a fresh id and `created`."""
        obj = self.shapes.new(self.cls_of(obj_type))
        if "id" in obj:
            obj["id"] = self.ids.new(obj_type)
        if "created" in obj:
            obj["created"] = self.clock.now()
        b = registry.get(obj_type)
        for k, v in b.defaults.items():
            obj[k] = json.loads(json.dumps(v)) if isinstance(v, dict | list) else v
        obj.update(values)
        return obj

    def insert(
        self,
        obj_type: str,
        obj: dict[str, Any],
        *,
        lists: tuple[str, ...] = (),
        prune: bool = True,
    ) -> Record:
        """Store a new object; unset fields Stripe leaves out are dropped unless `prune`
        is false (objects given to `/_emulator/load` are kept as given)."""
        if prune:
            self.shapes.prune_type(obj_type, obj)
        created = obj.get("created")
        if created is None:
            created = obj.get("date")
        rec = Record(
            obj_type,
            str(obj.get("id") or ""),
            created if isinstance(created, int) else 0,
            self.store.next_seq(),
            obj,
        )
        self.store.add(rec)
        self._attach_auto_lists(rec, obj)
        for path in lists:
            self.store.add_to_list(path, rec)
        return rec

    def insert_raw(self, obj_type: str, obj_id: str, created: int, raw: bytes) -> Record:
        """A record from already-rendered bytes (the generator's fast path)."""
        rec = Record(obj_type, obj_id, created, self.store.next_seq(), None, raw)
        self.store.add(rec)
        if obj_type in self.auto_lists:
            self._attach_auto_lists(rec, rec.obj)
        return rec

    def _attach_auto_lists(self, rec: Record, obj: dict[str, Any]) -> None:
        for template, param, fld in self.auto_lists.get(rec.type, ()):
            parent = ref_id(obj.get(fld))
            if parent:
                self.store.add_to_list(template.replace("{" + param + "}", parent), rec)

    def _relist(self, rec: Record, before: dict[str, Any]) -> None:
        for template, param, fld in self.auto_lists.get(rec.type, ()):
            old, new = ref_id(before.get(fld)), ref_id(rec.obj.get(fld))
            if old == new:
                continue
            if old:
                self.store.remove_from_list(template.replace("{" + param + "}", old), rec)
            if new:
                self.store.add_to_list(template.replace("{" + param + "}", new), rec)

    def check_refs(self, cls: str, params: dict[str, Any], skip: set[str] = frozenset()) -> None:
        """A parameter naming an object the field refers to (`customer=cus_...` where
        the object's `customer` is an expandable Customer) must name one that exists:
        otherwise 400 `resource_missing` with the parameter, as Stripe answers. Only
        the types in REF_CHECKED: payment methods, sources and tokens have test-mode
        ids (`pm_card_visa`, `tok_visa`) the emulator does not store."""
        if not cls:
            return
        fields = self.shapes.fields(cls)
        for k, v in params.items():
            if k in skip or k not in fields or not isinstance(v, str) or v == UNSET:
                continue
            d = fields[k]
            if d.get("t") != "expandable":
                continue
            types = [t for t in self.shapes.types_of(d) if t in REF_CHECKED]
            if types and self.store.find_any(v, types) is None:
                raise StripeError.missing(types[0], v, param=k)

    def apply_params(
        self, cls: str, obj: dict[str, Any], params: dict[str, Any], skip: set[str] = frozenset()
    ) -> None:
        """Copy parameters onto the fields of the same name (merging nested hashes and
        metadata, unsetting on empty strings)."""
        fields = self.shapes.fields(cls)
        for k, v in params.items():
            if k in skip or k == "expand" or k not in fields or k in ("id", "object"):
                continue
            d = fields[k]
            if v == UNSET:
                obj[k] = {} if k == "metadata" else None
                continue
            if k == "metadata" and isinstance(v, dict):
                md = obj.get(k) if isinstance(obj.get(k), dict) else {}
                for mk, mv in v.items():
                    if mv == UNSET:
                        md.pop(mk, None)
                    else:
                        md[mk] = mv
                obj[k] = md
                continue
            obj[k] = self._coerce(d, v, obj.get(k))

    def _coerce(self, d: dict[str, Any], v: Any, current: Any) -> Any:
        t = d.get("t")
        if t == "class" and isinstance(v, dict):
            name = d["name"]
            if "." not in name:  # a top-level resource embedded by value
                return current
            base = current if isinstance(current, dict) else self.shapes.new(name)
            self.apply_params(name, base, v)
            return base
        if t == "class" and isinstance(v, str) and "." not in d["name"]:
            # a top-level resource embedded by value, named by its id
            # (`issuing.card.cardholder`, `product_feature.entitlement_feature`)
            obj_type = self.shapes.class_type.get(d["name"])
            rec = self.store.get(obj_type, v) if obj_type else None
            return json.loads(rec.to_bytes()) if rec is not None else current
        if t == "list" and isinstance(v, list):
            return [self._coerce(d["of"], x, None) for x in v]
        if t == "map" and isinstance(v, dict):
            return {k: (None if x == UNSET else x) for k, x in v.items()}
        if t == "union":
            for o in d["of"]:
                if (o.get("t") == "class") == isinstance(v, dict):
                    return self._coerce(o, v, current)
            return v
        if t in ("class", "list", "map") and not isinstance(v, dict | list):
            return current
        if t == "float" and isinstance(v, int):
            return float(v)
        if t in ("int", "float", "bool", "str", "enum", "expandable", "any", "listobject"):
            if t == "listobject":
                return current
            return v
        return v

    # ---- generic handlers ------------------------------------------------------------

    def create(self, call: Call, obj_type: str | None = None) -> Record | dict[str, Any]:
        route = call.route
        assert route is not None
        obj_type = obj_type or route.types[0]
        b = registry.get(obj_type)
        parent = self.check_parent(call)
        obj = self.new_object(obj_type)
        if b.custom_id and call.params.get("id"):
            cid = str(call.params["id"])
            if self.store.get(obj_type, cid) is not None:
                raise StripeError.invalid(
                    f"{obj_type.capitalize()} already exists.",
                    param="id",
                    code="resource_already_exists",
                )
            obj["id"] = cid
        cls = self.cls_of(obj_type)
        self.check_refs(cls, call.params, b.consumes)
        self.apply_params(cls, obj, call.params, b.consumes)
        lists: tuple[str, ...] = ()
        if parent is not None and route.list_template:
            fld = self.parent_field(obj_type, route.list_template)
            if fld is not None:
                obj[fld] = parent
            else:
                lists = (route.fill(route.list_template, call.path_params),)
        if b.create is not None:
            b.create(call, obj)
        if not obj.get("id"):
            return obj  # an object Stripe does not keep (login links, funding instructions)
        rec = self.insert(obj_type, obj, lists=lists)
        if not b.created_event_after_hook:
            self.emit_for(call, rec, "created")
        if b.created is not None:
            b.created(call, rec)
        if b.created_event_after_hook:
            self.emit_for(call, rec, "created")
        return rec

    def update(self, call: Call, target: Record | dict[str, Any]) -> Record:
        rec = self.require(call, target)
        b = registry.get(rec.type)
        before = rec.copy()
        cls = self.shapes.type_class.get(rec.type, "")
        self.check_refs(cls, call.params, b.consumes)
        self.apply_params(cls, rec.obj, call.params, b.consumes)
        if b.update is not None:
            b.update(call, rec, before)
        self.changed(call, rec, before)
        return rec

    def changed(
        self, call: Call, rec: Record, before: dict[str, Any], event: str | None = "updated"
    ) -> dict[str, Any] | None:
        """After a record's dict was mutated: refresh bytes and indexes, emit the event
        (with `previous_attributes`) when something changed."""
        self.shapes.prune_type(rec.type, rec.obj)
        rec.touch()
        prev = diff(before, rec.obj)
        if not prev:
            return None
        if "updated" in rec.obj and "updated" not in prev and isinstance(rec.obj["updated"], int):
            prev["updated"] = rec.obj["updated"]
            rec.obj["updated"] = self.clock.now()
            rec.touch()
        self._relist(rec, before)
        if event is not None:
            self.emit_for(call, rec, event, previous=prev)
        return prev

    def delete(self, call: Call, target: Record | dict[str, Any]) -> dict[str, Any]:
        rec = self.require(call, target)
        b = registry.get(rec.type)
        if b.delete is not None:
            b.delete(call, rec)
        return self.remove(call, rec)

    def remove(self, call: Call, rec: Record, *, event: bool = True) -> dict[str, Any]:
        obj_name = rec.obj.get("object", rec.type)
        if event:
            self.emit_for(call, rec, "deleted")
        self.store.remove(rec)
        return {"id": rec.id, "object": obj_name, "deleted": True}

    def action(self, call: Call) -> Any:
        route = call.route
        assert route is not None
        rec = self.require(call, self.lookup(call))
        b = registry.get(rec.type)
        hook = b.actions.get(route.method)
        if hook is not None:
            return hook(call, rec)
        return self.generic_action(call, rec)

    def generic_action(self, call: Call, rec: Record) -> Any:
        route = call.route
        assert route is not None
        before = rec.copy()
        cls = self.shapes.type_class.get(rec.type, "")
        fields = self.shapes.fields(cls)
        status, stamp = ACTION_STATUS.get(route.method, (None, None))
        st = fields.get("status")
        if status and st and (st.get("t") != "enum" or status in st.get("values", [])):
            rec.obj["status"] = status
        if stamp and stamp in fields:
            rec.obj[stamp] = self.clock.now()
        if route.method in ACTIVE_FLAG and fields.get("active", {}).get("t") == "bool":
            rec.obj["active"] = ACTIVE_FLAG[route.method]
        self.apply_params(cls, rec.obj, call.params)
        past = PAST.get(route.method)
        prev = self.changed(call, rec, before, event=None)
        if past:
            self.emit_for(call, rec, past)
        if prev:
            self.emit_for(call, rec, "updated", previous=prev)
        if route.cls and self.shapes.class_type.get(route.cls) not in (None, rec.type):
            return self.shapes.new(route.cls)
        return rec

    def singleton(self, call: Call) -> Record:
        route = call.route
        assert route is not None
        parent = self.check_parent(call)
        path = route.fill(route.template, call.path_params)
        rec = self.store.singletons.get(path)
        if rec is None:
            obj_type = route.types[0]
            if obj_type == "account":
                loaded = self.store.get("account", PLATFORM_ACCOUNT)
                if loaded is not None:  # the platform account, given to /_emulator/load
                    return loaded
            obj = self._new_singleton(call, route, parent)
            rec = Record(obj_type, str(obj.get("id") or path), 0, self.store.next_seq(), obj)
            self.store.singletons[path] = rec
        return rec

    def _new_singleton(self, call: Call, route: Route, parent: str | None) -> dict[str, Any]:
        obj_type = route.types[0]
        obj = self.new_object(obj_type)
        if obj_type == "account":
            obj["id"] = PLATFORM_ACCOUNT
        if parent and route.parent_types:
            fld = self.parent_field_by_type(obj_type, route.parent_types[0])
            if fld:
                obj[fld] = parent
        b = registry.get(obj_type)
        if b.create is not None:
            saved, call.params = call.params, {}
            b.create(call, obj)
            call.params = saved
        self.shapes.prune_type(obj_type, obj)
        return obj

    def included_singleton(self, route: Route, parent_id: str) -> dict[str, Any]:
        """The object a parent's singleton route serves (a customer's cash balance), as
        `expand[]` includes it in the parent: the stored one, else a fresh default."""
        path = route.fill(route.template, {str(route.parent_param): parent_id})
        rec = self.store.singletons.get(path)
        if rec is not None:
            return rec.copy()
        return self._new_singleton(self.internal_call(), route, parent_id)

    def transient(self, call: Call) -> Any:
        route = call.route
        assert route is not None
        if not route.cls:
            raise StripeError.unknown_url(route.verb, route.template)
        obj = self.shapes.new(route.cls)
        obj_type = self.shapes.class_type.get(route.cls, "")
        if "id" in obj:
            obj["id"] = self.ids.new(obj_type)
        if "created" in obj:
            obj["created"] = self.clock.now()
        self.apply_params(route.cls, obj, call.params)
        return self.shapes.prune(route.cls, obj)

    # ---- relations -------------------------------------------------------------------

    def parent_field(self, child_type: str, list_template: str) -> str | None:
        for template, _param, fld in self.auto_lists.get(child_type, ()):
            if norm(template) == norm(list_template):
                return fld
        return None

    def parent_field_by_type(self, child_type: str, parent_type: str) -> str | None:
        cls = self.shapes.type_class.get(child_type)
        pcls = self.shapes.type_class.get(parent_type)
        if not cls or not pcls:
            return None
        fields = self.shapes.fields(cls)
        for name, d in fields.items():
            if name in ("id", "object"):
                continue
            if d.get("t") in ("expandable", "class") and pcls in self.shapes.classes_of(d):
                return name
        last = parent_type.rsplit(".", 1)[-1]
        if last in fields and fields[last].get("t") in ("str", "expandable"):
            return last
        return None

    def _auto_lists_table(self) -> dict[str, list[tuple[str, str, str]]]:
        """child type -> [(nested list template, its parameter, field naming the parent)]."""
        table: dict[str, list[tuple[str, str, str]]] = {}
        for r in self.routes:
            if r.kind != LIST or not r.list_template or not r.parent_types or not r.parent_param:
                continue
            for t in r.types:
                fld = self.parent_field_by_type(t, r.parent_types[0])
                if fld is None:
                    continue
                entry = (r.list_template, r.parent_param, fld)
                if entry not in table.setdefault(t, []):
                    table[t].append(entry)
        for r in self.routes:
            if r.kind != LIST or r.parent_param or not r.types:
                continue
            for fld in registry.INDEXED_FILTERS.get(r.types[0], ()):
                entry = (f"{r.template}?{fld}={{{fld}}}", fld, fld)
                if entry not in table.setdefault(r.types[0], []):
                    table[r.types[0]].append(entry)
        return table

    def _included_singletons(self) -> dict[tuple[str, str], Route]:
        out: dict[tuple[str, str], Route] = {}
        for r in self.routes:
            if r.kind == SINGLETON_GET and r.parent_types and r.types:
                fld = r.template.rsplit("/", 1)[-1]
                for pt in r.parent_types:
                    cls = self.shapes.type_class.get(pt, "")
                    d = self.shapes.fields(cls).get(fld)
                    if d is not None and d.get("t") == "class":
                        out.setdefault((pt, fld), r)
        return out

    def _includable_table(self) -> dict[tuple[str, str], Route]:
        """(parent type, field) -> the nested list route that serves that field."""
        out: dict[tuple[str, str], Route] = {}
        for r in self.routes:
            if r.kind == LIST and r.list_template and r.parent_types:
                fld = r.list_template.rsplit("/", 1)[-1]
                for pt in r.parent_types:
                    out.setdefault((pt, fld), r)
        return out

    # ---- events ----------------------------------------------------------------------

    def event_prefix(self, rec_type: str, obj: dict[str, Any]) -> str | None:
        b = registry.get(rec_type)
        p = b.event_prefix
        if callable(p):
            return p(obj)
        if isinstance(p, str):
            return p
        if rec_type.startswith("issuing."):
            return "issuing_" + rec_type[len("issuing.") :]
        return rec_type

    def emit_for(
        self,
        call: Call | None,
        rec: Record,
        verb: str,
        previous: dict[str, Any] | None = None,
        at: int | None = None,
    ) -> Record | None:
        prefix = self.event_prefix(rec.type, rec.obj)
        if prefix is None:
            return None
        return self.emit(call, f"{prefix}.{verb}", rec.to_bytes(), previous=previous, at=at)

    def emit(
        self,
        call: Call | None,
        type_: str,
        obj_bytes: bytes,
        previous: dict[str, Any] | None = None,
        at: int | None = None,
    ) -> Record | None:
        """Record an event (only types Stripe has) and offer it to the webhook endpoints
        that receive its type."""
        if type_ not in self.event_types:
            return None
        targets = self._webhook_targets(type_)
        eid = self.ids.new("event")
        created = self.clock.now() if at is None else at
        request = {
            "id": call.request_id if call else None,
            "idempotency_key": call.idempotency_key if call else None,
        }
        head = dumps(
            self.shapes.prune_type(
                "event",
                {
                    "id": eid,
                    "object": "event",
                    "account": None,
                    "api_version": self.default_version,
                    "context": None,
                    "created": created,
                },
            )
        )[:-1]
        data = b'{"object":' + obj_bytes
        if previous is not None:
            data += b',"previous_attributes":' + dumps(previous)
        data += b"}"
        tail = dumps(
            {
                "livemode": False,
                "pending_webhooks": len(targets),
                "request": request,
                "type": type_,
            }
        )[1:]
        raw = head + b',"data":' + data + b"," + tail
        rec = Record("event", eid, created, self.store.next_seq(), None, raw)
        self.store.add(rec)
        if targets and self.config.webhooks:
            self.webhooks.offer(rec, targets)
        return rec

    def _webhook_targets(self, type_: str) -> list[Record]:
        """The enabled endpoints that receive `type_` (none at all: one dict lookup)."""
        endpoints = self.store.by_type.get("webhook_endpoint")
        if not endpoints:
            return []
        return [rec for rec in endpoints.values() if matches(rec.obj, type_)]


ACTION_STATUS: dict[str, tuple[str | None, str | None]] = {
    "cancel": ("canceled", "canceled_at"),
    "void_invoice": ("void", None),
    "void_credit_note": ("void", "voided_at"),
    "void_grant": (None, "voided_at"),
    "finalize_invoice": ("open", None),
    "finalize_quote": ("open", None),
    "pay": ("paid", None),
    "mark_uncollectible": ("uncollectible", None),
    "expire": ("expired", None),
    "accept": ("accepted", None),
    "close": ("closed", None),
    "release": ("released", "released_at"),
    "submit": ("submitted", None),
    "reverse": ("reversed", None),
    "reject": ("rejected", None),
    "deactivate": ("inactive", None),
    "reactivate": ("active", None),
    "activate": ("active", None),
    "archive": ("archived", None),
    "unarchive": ("active", None),
    "uninstall": ("uninstalled", None),
    "disconnect": ("disconnected", None),
    "redact": ("redacted", None),
    "approve": ("approved", None),
    "decline": ("declined", None),
}
ACTIVE_FLAG = {
    "deactivate": False,
    "archive": False,
    "reactivate": True,
    "activate": True,
    "unarchive": True,
}
PAST = {
    "cancel": "canceled",
    "void_invoice": "voided",
    "void_credit_note": "voided",
    "finalize_invoice": "finalized",
    "finalize_quote": "finalized",
    "pay": "paid",
    "mark_uncollectible": "marked_uncollectible",
    "send_invoice": "sent",
    "expire": "expired",
    "accept": "accepted",
    "capture": "captured",
    "close": "closed",
    "deactivate": "deactivated",
    "reactivate": "reactivated",
    "activate": "activated",
    "release": "released",
    "submit": "submitted",
    "reverse": "reversed",
    "reject": "rejected",
    "attach": "attached",
    "detach": "detached",
    "pause": "paused",
    "resume": "resumed",
    "redact": "redacted",
}


# The object types a parameter's reference is checked against (see Emulator.check_refs).
REF_CHECKED: frozenset[str] = frozenset(
    {
        "customer",
        "product",
        "price",
        "plan",
        "coupon",
        "promotion_code",
        "invoice",
        "subscription",
        "subscription_schedule",
        "payment_intent",
        "setup_intent",
        "charge",
        "refund",
        "tax_rate",
        "test_helpers.test_clock",
    }
)


def ref_id(value: Any) -> str | None:
    """The id a reference holds, expanded or not."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, dict):
        v = value.get("id")
        return v if isinstance(v, str) else None
    return None


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Stripe's `previous_attributes`: the old values of what changed; nested hashes
    (metadata, addresses) only for the keys that changed."""
    prev: dict[str, Any] = {}
    for k in before.keys() | after.keys():
        a = before.get(k, _MISSING)
        b = after.get(k, _MISSING)
        if a == b or ((a is None or a is _MISSING) and (b is None or b is _MISSING)):
            continue  # a null field and a left-out one are the same
        if (
            isinstance(a, dict)
            and isinstance(b, dict)
            and a.get("object") != "list"
            and "id" not in a
        ):
            prev[k] = diff(a, b)
        else:
            prev[k] = None if a is _MISSING else a
    return prev


def redact(key: str) -> str:
    if len(key) <= 12:
        return key[:8] + "*" * max(0, len(key) - 8)
    head = key[:8]
    return head + "*" * (len(key) - 12) + key[-4:]
