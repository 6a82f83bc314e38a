"""Table columns, derived from the SDK's field types (hand-declared for legacy collections).

Conventions (the seed's and Stripe Sigma's):

- amounts and other integers: ``bigint`` (minor units, as Stripe sends them);
- Unix times: ``timestamptz``;
- expandable references: ``<field>_id text`` holding the referenced id, whether Stripe
  sent the id or the expanded object;
- nested objects, lists, maps (metadata) and mixed unions: ``jsonb``;
- enums and strings: ``text`` (no PostgreSQL enum types: new values never break);
- booleans: ``boolean``; floats: ``double precision``.

Every column carries the SQL expression that computes it from the object's JSON
(``_raw``): the store hands PostgreSQL the raw objects and PostgreSQL fills the typed
columns, in C, in one statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache

from stripesync.catalog import Collection, build_catalog, load_spec
from stripesync.catalog.spec import TypeDesc


class Kind(StrEnum):
    TEXT = "text"
    BIGINT = "bigint"
    FLOAT = "double precision"
    BOOL = "boolean"
    TIME = "timestamptz"
    JSON = "jsonb"
    REF = "ref"  # text id of an expandable reference


PG_TYPES = {
    Kind.TEXT: "text",
    Kind.BIGINT: "bigint",
    Kind.FLOAT: "double precision",
    Kind.BOOL: "boolean",
    Kind.TIME: "timestamptz",
    Kind.JSON: "jsonb",
    Kind.REF: "text",
}


@dataclass(frozen=True, slots=True)
class Column:
    name: str  # column name
    field: str  # the object's field it comes from
    kind: Kind

    @property
    def pg_type(self) -> str:
        return PG_TYPES[self.kind]

    def expr(self, raw: str = "_raw") -> str:
        """SQL computing the column from the object's JSON in expression `raw`."""
        f = "'" + self.field.replace("'", "''") + "'"
        match self.kind:
            case Kind.TEXT:
                return f"({raw}->>{f})"
            case Kind.BIGINT:
                return f"({raw}->>{f})::numeric::bigint"
            case Kind.FLOAT:
                return f"({raw}->>{f})::double precision"
            case Kind.BOOL:
                return f"({raw}->>{f})::boolean"
            case Kind.TIME:
                return f"to_timestamp(({raw}->>{f})::double precision)"
            case Kind.JSON:
                return f"nullif({raw}->{f}, 'null'::jsonb)"
            case Kind.REF:
                return (
                    f"(CASE jsonb_typeof({raw}->{f}) WHEN 'object' THEN {raw}->{f}->>'id' "
                    f"ELSE {raw}->>{f} END)"
                )
        raise AssertionError(self.kind)


# Bookkeeping columns of every table.
SYSTEM_COLUMNS: tuple[tuple[str, str], ...] = (
    # The defaults of the NOT NULL columns serve only the proxy's rolled-back trial of a
    # client's INSERT (schema/guard.py): the store always gives them.
    ("_raw", "jsonb NOT NULL DEFAULT '{}'"),
    ("_parent_id", "text"),  # the parent's id for rows read through a parent
    # the Stripe-side time this copy reflects
    ("_stripe_time", "timestamptz NOT NULL DEFAULT '-infinity'"),
    ("_event_id", "text"),  # the last event applied to the row
    ("_synced_at", "timestamptz NOT NULL DEFAULT now()"),
)


def kind_of(d: TypeDesc) -> Kind:
    t = d.get("t")
    if t in ("str", "enum"):
        return Kind.TEXT
    if t == "int":
        return Kind.TIME if d.get("unix") else Kind.BIGINT
    if t == "float":
        return Kind.FLOAT
    if t == "bool":
        return Kind.BOOL
    if t == "expandable":
        return Kind.REF
    if t == "union":
        kinds = {kind_of(o) for o in d["of"]}
        if kinds == {Kind.TEXT}:
            return Kind.TEXT
        return Kind.JSON
    return Kind.JSON


LEGACY_KINDS = {
    "str": Kind.TEXT,
    "int": Kind.BIGINT,
    "unix": Kind.TIME,
    "bool": Kind.BOOL,
    "json": Kind.JSON,
    "ref": Kind.REF,
    "float": Kind.FLOAT,
}


def _column(field: str, kind: Kind) -> Column:
    name = f"{field}_id" if kind is Kind.REF else field
    return Column(name=name, field=field, kind=kind)


@cache
def columns_for(name: str) -> tuple[Column, ...]:
    """The typed columns of a collection's table (without the system columns)."""
    collection = build_catalog()[name]
    return _columns(collection)


def _columns(collection: Collection) -> tuple[Column, ...]:
    if collection.sdk_class is None:
        cols = [_column(c.name, LEGACY_KINDS[c.type]) for c in collection.legacy_columns]
    else:
        fields = load_spec().fields(collection.sdk_class)
        cols = [_column(f, kind_of(d)) for f, d in fields.items()]
    if collection.key not in ("id",) and collection.key not in {c.name for c in cols}:
        cols.insert(0, Column(name=collection.key, field=collection.key, kind=Kind.TEXT))
    # `id` first, then the rest in the SDK's (alphabetical) order; drop clashes where a
    # reference column would shadow a field of the same name.
    seen: set[str] = set()
    out: list[Column] = []
    for c in sorted(cols, key=lambda c: (c.name != "id", c.name != collection.key)):
        if c.name in seen or c.name.startswith("_"):
            continue
        seen.add(c.name)
        out.append(c)
    return tuple(out)


def masked_raw(raw: str, fields: Sequence[str]) -> str:
    """SQL for the object in expression `raw` with each of `fields` (credentials, a
    catalog entry's `masked`) set to JSON null where present."""
    for f in fields:
        lit = "'" + f.replace("'", "''") + "'"
        raw = f"jsonb_set({raw}, ARRAY[{lit}], 'null'::jsonb, false)"
    return raw


def quote(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'
