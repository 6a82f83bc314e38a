"""Lists as Stripe serves them: newest first, `limit` 1-100, cursors, `created` ranges,
the list's own filters, `expand[]=data.…`; and a small search (`/v1/customers/search`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stripesync.emulator import registry
from stripesync.emulator.errors import StripeError
from stripesync.emulator.store import Index, Record, dumps, page

if TYPE_CHECKING:
    from stripesync.emulator.engine import Call, Emulator

Pred = Callable[[dict[str, Any]], bool]
PAGING = {"limit", "starting_after", "ending_before", "expand", "created", "page", "query"}


def list_route(call: Call) -> bytes:
    em = call.em
    route = call.route
    assert route is not None
    p = call.params
    if route.parent_param and route.list_template:
        em.check_parent(call)
        url = route.fill(route.list_template, call.path_params)
        index = em.store.path_index.get(url) or Index()
    else:
        url = route.template
        index = em.store.index(route.types[0])
        for name in registry.INDEXED_FILTERS.get(route.types[0], ()):
            v = p.get(name)
            if isinstance(v, str):
                index = em.store.path_index.get(f"{url}?{name}={v}") or Index()
                break
    low, high = created_range(p.get("created"))
    if route.types and route.types[0] == "event":
        cutoff = em.clock.now() - em.config.event_retention_days * 86400
        low = cutoff if low is None else max(low, cutoff)
    pred = filters(call, list(route.types))
    return list_bytes(
        em,
        call,
        index,
        url,
        list(route.types),
        created=(low, high),
        predicate=pred,
    )


def list_bytes(
    em: Emulator,
    call: Call,
    index: Index,
    url: str,
    types: list[str],
    *,
    created: tuple[int | None, int | None] = (None, None),
    predicate: Pred | None = None,
) -> bytes:
    p = call.params
    limit = p.get("limit", 10)
    if not isinstance(limit, int) or not 1 <= limit <= 100:
        raise StripeError.invalid(
            "Invalid limit: must be between 1 and 100",
            param="limit",
            code="parameter_invalid_integer",
        )
    sa, eb = p.get("starting_after"), p.get("ending_before")
    if sa and eb:
        raise StripeError.invalid(
            "You may only specify one of these parameters: ending_before, starting_after.",
            param="ending_before",
        )
    after = _cursor(em, types, sa, "starting_after") if sa else None
    before = _cursor(em, types, eb, "ending_before") if eb else None
    rec_pred = None
    if predicate is not None:
        pred = predicate

        def rec_pred(r: Record) -> bool:
            return pred(r.obj)

    recs, has_more = page(
        index, limit=limit, after=after, before=before, created=created, predicate=rec_pred
    )
    call.listed = [r.id for r in recs]
    expand = [e[5:] for e in p.get("expand") or [] if e.startswith("data.")]
    other = [e for e in p.get("expand") or [] if not e.startswith("data.")]
    if other:
        raise StripeError.invalid(f"This property cannot be expanded ({other[0]}).", param="expand")
    if expand:
        from stripesync.emulator.expand import expand_object

        parts = []
        for r in recs:
            obj = r.copy()
            expand_object(em, obj, expand)
            parts.append(dumps(obj))
    else:
        parts = [r.to_bytes() for r in recs]
    return b"".join(
        (
            b'{"object":"list","data":[',
            b",".join(parts),
            b'],"has_more":',
            b"true" if has_more else b"false",
            b',"url":',
            dumps(url),
            b"}",
        )
    )


def _cursor(em: Emulator, types: list[str], oid: str, param: str) -> Record:
    for t in types:
        rec = em.store.get(t, oid) or em.store.get_deleted(t, oid)
        if rec is not None:
            return rec
    raise StripeError(
        400,
        f"No such {types[0] if types else 'object'}: '{oid}'",
        code="resource_missing",
        param=param,
    )


def created_range(value: Any, name: str = "created") -> tuple[int | None, int | None]:
    if value is None:
        return None, None
    if isinstance(value, int):
        return value, value
    if isinstance(value, dict):
        low = high = None
        for op, v in value.items():
            if not isinstance(v, int):
                raise StripeError.invalid(f"Invalid integer: {v}", param=f"{name}[{op}]")
            if op == "gt":
                low = v + 1 if low is None else max(low, v + 1)
            elif op == "gte":
                low = v if low is None else max(low, v)
            elif op == "lt":
                high = v - 1 if high is None else min(high, v - 1)
            elif op == "lte":
                high = v if high is None else min(high, v)
        return low, high
    return None, None


def filters(call: Call, types: list[str]) -> Pred | None:
    """The list's own filters (ListParams beyond paging), generic by field name unless
    the collection declares its own."""
    em = call.em
    obj_type = types[0] if types else ""
    b = registry.get(obj_type)
    cls = em.shapes.type_class.get(obj_type, "")
    fields = em.shapes.fields(cls)
    preds: list[Pred] = []
    for name, v in call.params.items():
        if name in PAGING:
            continue
        custom = b.filters.get(name)
        if custom is not None:
            preds.append(custom(call, v))
            continue
        pred = _generic_filter(name, v, fields)
        if pred is not None:
            preds.append(pred)
    if b.default_filter is not None:
        d = b.default_filter(call, call.params)
        if d is not None:
            preds.append(d)
    if not preds:
        return None
    if len(preds) == 1:
        return preds[0]
    return lambda o: all(p(o) for p in preds)


def _ref(v: Any) -> Any:
    if isinstance(v, dict) and "id" in v:
        return v["id"]
    return v


def _generic_filter(name: str, v: Any, fields: dict[str, Any]) -> Pred | None:
    if name in fields:
        if isinstance(v, dict) and fields[name].get("t") == "int":
            low, high = created_range(v, name)

            def in_range(o: dict[str, Any]) -> bool:
                x = o.get(name)
                if not isinstance(x, int):
                    return False
                return (low is None or x >= low) and (high is None or x <= high)

            return in_range
        if isinstance(v, dict):

            def nested(o: dict[str, Any]) -> bool:
                cur = o.get(name)
                return isinstance(cur, dict) and all(cur.get(k) == x for k, x in v.items())

            return nested
        return lambda o: _ref(o.get(name)) == v
    if name == "ids" and isinstance(v, list):
        wanted = set(v)
        return lambda o: o.get("id") in wanted
    if isinstance(v, list) and name.endswith("s") and name[:-1] in fields:
        wanted_set = set(v)
        single = name[:-1]
        return lambda o: o.get(single) in wanted_set
    return None


# ---- search --------------------------------------------------------------------------

_CLAUSE = re.compile(
    r"""\s*(?P<field>[a-z_]+(?:\[['"][^'"]+['"]\])?(?:\.[a-z_]+)*)\s*(?P<op>:|~|>=|<=|>|<)\s*"""
    r"""(?P<value>'[^']*'|"[^"]*"|[-\w.]+)\s*"""
)


def search_route(call: Call) -> bytes:
    """Stripe's search query language, the common part: `field:'value'`,
    `metadata['key']:'value'`, `field~'substring'`, numeric comparisons, AND / OR."""
    em = call.em
    route = call.route
    assert route is not None
    query = call.params.get("query", "")
    limit = call.params.get("limit", 10)
    if not isinstance(limit, int) or not 1 <= limit <= 100:
        raise StripeError.invalid("Invalid limit: must be between 1 and 100", param="limit")
    pred = _parse_query(query)
    start = 0
    if call.params.get("page"):
        try:
            start = int(str(call.params["page"]).removeprefix("page_"))
        except ValueError as exc:
            raise StripeError.invalid("Invalid page", param="page") from exc
    matches: list[Record] = []
    index = em.store.index(route.types[0])
    for rec in index.records():
        if pred(rec.obj):
            matches.append(rec)
            if len(matches) > start + limit:
                break
    chunk = matches[start : start + limit]
    has_more = len(matches) > start + limit
    body = {
        "object": "search_result",
        "data": [r.obj for r in chunk],
        "has_more": has_more,
        "next_page": f"page_{start + limit}" if has_more else None,
        "url": route.template,
    }
    return dumps(body)


def _parse_query(query: str) -> Pred:
    if not query.strip():
        raise StripeError.missing_param("query")
    ors = re.split(r"\s+OR\s+", query)
    groups: list[list[Pred]] = []
    for part in ors:
        clauses: list[Pred] = []
        for text in re.split(r"\s+AND\s+", part):
            m = _CLAUSE.fullmatch(text)
            if not m:
                raise StripeError.invalid(
                    f"Invalid search query: could not parse `{text.strip()}`.", param="query"
                )
            clauses.append(_clause(m.group("field"), m.group("op"), m.group("value")))
        groups.append(clauses)
    return lambda o: any(all(c(o) for c in g) for g in groups)


def _clause(field: str, op: str, raw: str) -> Pred:
    value: Any = raw[1:-1] if raw[:1] in ("'", '"') else raw
    path: list[str]
    m = re.match(r"""metadata\[['"]([^'"]+)['"]\]""", field)
    path = ["metadata", m.group(1)] if m else field.split(".")

    def get(o: dict[str, Any]) -> Any:
        cur: Any = o
        for p in path:
            if not isinstance(cur, dict):
                return None
            cur = cur.get(p)
        return _ref(cur)

    if op == ":":
        return lambda o: (
            str(get(o)).lower() == str(value).lower() if get(o) is not None else (value == "null")
        )
    if op == "~":
        return lambda o: str(value).lower() in str(get(o) or "").lower()
    num = float(value)
    cmp = {
        ">": lambda x: x > num,
        "<": lambda x: x < num,
        ">=": lambda x: x >= num,
        "<=": lambda x: x <= num,
    }[op]
    return lambda o: isinstance(get(o), int | float) and cmp(get(o))
