"""Columns of a synced table to the parameters of Stripe's create / update / delete calls.

The rule, from the catalog and the SDK's parameter types:

- a column is written through the parameter named after the object's field it comes
  from: ``email`` → ``email``, the reference column ``customer_id`` → ``customer``;
- on INSERT a column is writable when the create call's parameter type
  (``CustomerCreateParams``) has that parameter, or when it fills a brace of the call's
  path (``customer_id`` for ``POST /v1/customers/{customer}/tax_ids``); on UPDATE when the
  update call's type (``CustomerUpdateParams``) has it. Everything else is read-only:
  Stripe sets it. Legacy collections (no SDK type) accept every column but the ones
  Stripe always sets (``id``, ``object``, ``created``, ``livemode``, ``updated``);
- values: timestamps → Unix seconds, booleans and numbers as they are, jsonb (``metadata``,
  ``address``, ``items``, ...) → nested parameters (the SDK encodes them as
  ``address[city]=...``). On INSERT a NULL means "not given"; on UPDATE a NULL unsets the
  parameter (Stripe's empty string) where Stripe allows it. On UPDATE a jsonb object is
  sent as its difference from the row's current value, keys that went away as ``""``, so
  ``metadata = metadata - 'k'`` removes ``k`` at Stripe as it does in the column.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from stripesync.catalog import Collection, WriteOp, load_spec
from stripesync.catalog.spec import TypeDesc
from stripesync.proxy.refusals import (
    NOT_NULL_VIOLATION,
    READ_ONLY_COLUMN,
    UNDEFINED_COLUMN,
    WRONG_OBJECT_TYPE,
    Refusal,
)
from stripesync.schema.columns import SYSTEM_COLUMNS, Column, Kind, columns_for

__all__ = ["OpShape", "PathPart", "Verb", "WriteShape", "shape_for"]

_BRACE = re.compile(r"\{([a-z_]+)\}")
# Fields Stripe always sets, for legacy collections that have no parameter types.
LEGACY_READ_ONLY = frozenset({"id", "object", "created", "livemode", "updated"})
SYSTEM_NAMES = frozenset(name for name, _ in SYSTEM_COLUMNS)


class Verb(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class PathPart:
    """A brace of a call's path and the column whose value fills it."""

    brace: str
    column: str  # a column name, or "_parent_id"
    parent_fallback: bool  # the row's _parent_id when the column is NULL (update, delete)


@dataclass(frozen=True, slots=True)
class OpShape:
    """One of a collection's calls, as the proxy makes it."""

    verb: Verb
    op: WriteOp
    fields: Mapping[str, TypeDesc] | None  # the SDK's parameter type; None: legacy
    params: Mapping[str, Column]  # writable column name -> column (parameter: column.field)
    path: tuple[PathPart, ...]  # braces other than the object's own key
    api_version: str | None  # a Stripe-Version for legacy endpoints

    @property
    def call(self) -> str:
        return f"{self.op.verb} {self.op.path}"

    def writable(self) -> list[str]:
        """The columns a statement may set with this call (path columns included)."""
        names = set(self.params)
        if self.verb is Verb.CREATE:
            names.update(p.column for p in self.path if p.column != "_parent_id")
        return sorted(names)

    def desc(self, column: Column) -> TypeDesc | None:
        return self.fields.get(column.field) if self.fields is not None else None


@dataclass(frozen=True, slots=True)
class WriteShape:
    """Everything the proxy needs to write one collection."""

    collection: Collection
    schema: str
    columns: Mapping[str, Column]
    create: OpShape | None
    update: OpShape | None
    delete: OpShape | None

    @property
    def key(self) -> str:
        return self.collection.key

    @property
    def table(self) -> str:
        return f"{self.schema}.{self.collection.table}"

    def op(self, verb: Verb) -> OpShape:
        """The call for ``verb``, or a refusal that says what Stripe offers."""
        shape = {Verb.CREATE: self.create, Verb.UPDATE: self.update, Verb.DELETE: self.delete}[verb]
        if shape is not None:
            return shape
        offered = [
            f"{sql} ({s.call})"
            for sql, s in (
                ("INSERT", self.create),
                ("UPDATE", self.update),
                ("DELETE", self.delete),
            )
            if s is not None
        ]
        sql_verb = {Verb.CREATE: "INSERT into", Verb.UPDATE: "UPDATE", Verb.DELETE: "DELETE from"}
        name = self.collection.name
        if offered:
            detail = f"Stripe's API offers no {verb.value} for {name}."
            hint = f"Writes {self.table} accepts: {', '.join(offered)}."
        else:
            detail = f"Stripe's API offers no create, update or delete for {name}."
            hint = f"{self.table} is read-only: it is kept in sync from Stripe."
        raise Refusal(
            WRONG_OBJECT_TYPE,
            f'cannot {sql_verb[verb]} table "{self.table}": Stripe does not let one {verb.value} '
            f"a {name}",
            detail=detail,
            hint=hint,
            schema_name=self.schema,
            table_name=self.collection.table,
        )

    def check_columns(self, verb: Verb, names: list[str], *, allow_key: bool = False) -> None:
        """Refuse a statement that sets a column the call cannot write."""
        shape = self.op(verb)
        writable = set(shape.writable())
        for name in names:
            if name in writable or (allow_key and name == self.key):
                continue
            listed = ", ".join(shape.writable()) or "none"
            sql = "INSERT" if verb is Verb.CREATE else "UPDATE"
            if name not in self.columns and name not in SYSTEM_NAMES:
                raise Refusal(
                    UNDEFINED_COLUMN,
                    f'column "{name}" of relation "{self.table}" does not exist',
                    hint=f"Columns writable on {sql}: {listed}.",
                    schema_name=self.schema,
                    table_name=self.collection.table,
                    column_name=name,
                )
            why = (
                "it is stripesync's bookkeeping"
                if name in SYSTEM_NAMES
                else f"Stripe sets it; {shape.call} has no parameter for it"
            )
            raise Refusal(
                READ_ONLY_COLUMN,
                f'column "{name}" of "{self.table}" cannot be written on {sql}: {why}',
                detail=f"Stripe's {verb.value} of a {self.collection.name} is {shape.call}.",
                hint=f"Columns writable on {sql}: {listed}.",
                schema_name=self.schema,
                table_name=self.collection.table,
                column_name=name,
            )

    # ---- values to parameters ----------------------------------------------------------

    def create_params(
        self, values: Mapping[str, Any], *, with_key: bool
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """(body parameters, path values) for a create from the row's given values."""
        shape = self.op(Verb.CREATE)
        path_columns = {p.column: p for p in shape.path}
        params: dict[str, Any] = {}
        path: dict[str, str] = {}
        for name, value in values.items():
            if name in path_columns:
                if value is not None:
                    path[path_columns[name].brace] = str(value)
                continue
            if name == self.key and not with_key:
                continue
            column = self.columns[name]
            if value is None:
                continue  # not given
            converted = _strip(_convert(column, value))
            if converted in ({}, []):
                continue
            params[column.field] = converted
        for part in shape.path:
            if part.brace not in path:
                raise Refusal(
                    NOT_NULL_VIOLATION,
                    f'column "{part.column}" is required to create a {self.collection.name}',
                    detail=f"Its value fills {{{part.brace}}} in {shape.call}.",
                    schema_name=self.schema,
                    table_name=self.collection.table,
                    column_name=part.column,
                )
        return params, path

    def update_params(self, new: Mapping[str, Any], old: Mapping[str, Any]) -> dict[str, Any]:
        """Body parameters for an update setting ``new`` on a row whose values are ``old``."""
        shape = self.op(Verb.UPDATE)
        params: dict[str, Any] = {}
        for name, value in new.items():
            column = self.columns[name]
            desc = shape.desc(column)
            before = old.get(name)
            if value is None:
                if before is None and column.kind is Kind.JSON:
                    continue
                if desc is not None and not (
                    desc.get("emptyable") or desc.get("t") == "str" or desc.get("t") == "map"
                ):
                    raise Refusal(
                        NOT_NULL_VIOLATION,
                        f'column "{name}" of "{self.table}" cannot be set to NULL: Stripe '
                        f"cannot unset {column.field}",
                        detail=f"{shape.call}: parameter {column.field} cannot be emptied.",
                        schema_name=self.schema,
                        table_name=self.collection.table,
                        column_name=name,
                    )
                params[column.field] = ""
                continue
            value = _convert(column, value)
            if isinstance(value, dict):
                changes = _diff(before, value) if isinstance(before, dict) else _strip(value)
                if changes:
                    params[column.field] = changes
            elif isinstance(value, list):
                if value == before:
                    continue
                params[column.field] = _strip(value) if value else ""
            else:
                params[column.field] = value
        return params

    def path_for(self, verb: Verb, key: str | None, parts: Mapping[str, str | None]) -> str:
        """The call's path with its braces filled (``parts``: brace -> value)."""
        from urllib.parse import quote

        shape = self.op(verb)
        path = shape.op.path
        braces = _BRACE.findall(path)
        key_brace = braces[-1] if verb is not Verb.CREATE and braces else None
        for brace in braces:
            value = key if brace == key_brace else parts.get(brace)
            if value is None:
                part = next((p for p in shape.path if p.brace == brace), None)
                column = part.column if part is not None else brace
                raise Refusal(
                    NOT_NULL_VIOLATION,
                    f'column "{column}" is NULL: {shape.call} needs it',
                    detail=f"Its value fills {{{brace}}} in the path of Stripe's "
                    f"{verb.value} call.",
                    schema_name=self.schema,
                    table_name=self.collection.table,
                )
            path = path.replace("{" + brace + "}", quote(str(value), safe=""), 1)
        return path


def shape_for(collection: Collection, schema: str = "stripe") -> WriteShape:
    """How the proxy writes ``collection`` (which calls, which columns)."""
    columns = {c.name: c for c in columns_for(collection.name)}
    w = collection.writes
    return WriteShape(
        collection=collection,
        schema=schema,
        columns=columns,
        create=_op_shape(collection, columns, Verb.CREATE, w.create),
        update=_op_shape(collection, columns, Verb.UPDATE, w.update),
        delete=_op_shape(collection, columns, Verb.DELETE, w.delete),
    )


# ---- internals ---------------------------------------------------------------------------


def _op_shape(
    collection: Collection, columns: Mapping[str, Column], verb: Verb, op: WriteOp | None
) -> OpShape | None:
    if op is None:
        return None
    braces = _BRACE.findall(op.path)
    own = braces[-1:] if verb is not Verb.CREATE else []
    path: list[PathPart] = []
    for brace in braces:
        if brace in own:
            continue
        part = _path_part(collection, columns, brace, fallback=verb is not Verb.CREATE)
        if part is None:
            return None  # a path the proxy cannot fill from a row
        path.append(part)
    fields: Mapping[str, TypeDesc] | None
    if op.params is None:
        fields = None
        params = {
            name: c
            for name, c in columns.items()
            if name != collection.key and c.field not in LEGACY_READ_ONLY
        }
    else:
        fields = load_spec().param_fields(op.params)
        params = {
            name: c
            for name, c in columns.items()
            if c.field in fields and c.field != "expand" and name != collection.key
        }
    for part in path:
        params.pop(part.column, None)
    if verb is Verb.DELETE:
        params = {}
    api_version = collection.read.api_version if op.params is None else None
    return OpShape(verb, op, fields, params, tuple(path), api_version)


def _path_part(
    collection: Collection, columns: Mapping[str, Column], brace: str, *, fallback: bool
) -> PathPart | None:
    """Which column fills ``{brace}``: ``<brace>_id`` or ``<brace>``, else the reference
    to the parent collection the brace names in the catalog (``{id}`` of
    ``/v1/application_fees/{id}/refunds`` is a refund's ``fee_id``)."""
    parent_params = {r.parent_param: r.parent for r in collection.reads if r.parent}
    is_parent = brace in parent_params
    for name in (f"{brace}_id", brace):
        if name in columns and name != collection.key:
            return PathPart(brace, name, fallback and is_parent)
    if not is_parent:
        return None
    parent = parent_params[brace]
    from stripesync.catalog import build_catalog

    catalog = build_catalog()
    parent_class = catalog[parent].sdk_class if parent in catalog else None
    if collection.sdk_class is not None and parent_class is not None:
        fields = load_spec().fields(collection.sdk_class)
        for name, c in columns.items():
            d = fields.get(c.field, {})
            if c.kind is Kind.REF and d.get("of", {}).get("name") == parent_class:
                return PathPart(brace, name, fallback)
    return PathPart(brace, "_parent_id", False) if fallback else None


def _convert(column: Column, value: Any) -> Any:
    """A value PostgreSQL evaluated (decoded from to_jsonb) as Stripe's parameter."""
    if column.kind is Kind.TIME and isinstance(value, int | float):
        return math.floor(value)
    return value


def _strip(value: Any) -> Any:
    """Nulls dropped from nested objects: an absent key is 'not given'."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """What changes ``old`` into ``new``: changed keys, removed ones as ``""`` (unset)."""
    out: dict[str, Any] = {}
    for k, v in new.items():
        before = old.get(k)
        if v is None:
            if before is not None:
                out[k] = ""
        elif isinstance(v, dict) and isinstance(before, dict):
            inner = _diff(before, v)
            if inner:
                out[k] = inner
        elif v != before:
            out[k] = _strip(v)
    for k, before in old.items():
        if k not in new and before is not None:
            out[k] = ""
    return out
