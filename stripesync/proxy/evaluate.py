"""The statements that make PostgreSQL evaluate a write before it goes to Stripe.

The proxy does not interpret SQL expressions, nor decide who may write what: it runs the
client's own INSERT, UPDATE or DELETE on the client's own session, inside a savepoint (or
a transaction) that is rolled back at once (the *trial*, run by ``proxy/writes.py``). Its
RETURNING list is replaced by what the proxy needs, each value as ``to_jsonb(...)`` text
(timestamps as Unix seconds):

- INSERT: every given column (and, with ``ON CONFLICT (id) DO UPDATE``, every SET column)
  of each row inserted or updated. Rows ``ON CONFLICT DO NOTHING`` skipped, or whose DO
  UPDATE WHERE is false, are not returned: they need no call. A key left out reads as the
  table's placeholder default (``schema/guard.py``);
- UPDATE: the key, the path columns and each SET column's new value of each row updated;
- DELETE: the key and the path columns, then the client's own RETURNING list: a DELETE's
  RETURNING is evaluated before the row goes. An INSERT's or UPDATE's RETURNING list
  follows the slots too, only so that PostgreSQL checks it before Stripe is called.

So PostgreSQL evaluates every expression once, with the client's parameters (text or
binary), role, privileges, row-level security, transaction mode and search_path, and
refuses what it would refuse. The values a row had before (for an UPDATE's ``jsonb``
differences) are read from the stored copy afterwards (:func:`current_values_query`).
After Stripe answered and the copy is stored, RETURNING is ``SELECT <RETURNING list> FROM
<table> WHERE <key> = ANY($n+1)`` on the client's session.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pglast import ast
from pglast.enums.nodes import OnConflictAction

from stripesync.proxy.analyze import deparse
from stripesync.proxy.params import PathPart, WriteShape
from stripesync.schema.columns import Column, Kind

__all__ = ["Evaluation", "current_values_query", "evaluation", "quote", "returning_query"]

IDEMPOTENCY_SETTING = "stripesync.idempotency_key"
PARAMS_SETTING = "stripesync.params"  # extra Stripe parameters (JSON) for every call


def quote(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


@dataclass(slots=True)
class Evaluation:
    """The client's write with the proxy's RETURNING list, and what each output holds.

    ``slots`` name the JSON outputs in order ("v:email", "key", "path:customer", "idem",
    "params"); ``returning`` outputs follow them (a DELETE's RETURNING, in the client's
    formats)."""

    sql: str
    slots: list[str] = field(default_factory=list)
    returning: int = 0  # number of RETURNING outputs after the slots (DELETE only)
    given: list[str] = field(default_factory=list)  # INSERT: the columns named
    sets: list[str] = field(default_factory=list)  # UPDATE / DO UPDATE: the SET columns
    key: str | None = None  # the slot that holds each row's key
    conflict: str | None = None  # None, "nothing", "update"


def _json(expr: str, column: Column) -> str:
    if column.kind is Kind.TIME:
        return f"pg_catalog.to_jsonb(extract(epoch FROM {expr}))"
    return f"pg_catalog.to_jsonb({expr})"


def _with(node: ast.WithClause | None) -> str:
    if node is None:
        return ""
    return ("WITH RECURSIVE " if node.recursive else "WITH ") + deparse(node) + " "


def _table(shape: WriteShape, rel: ast.RangeVar) -> tuple[str, str]:
    """(FROM item, the name expressions use for the table)."""
    name = f"{quote(shape.schema)}.{quote(shape.collection.table)}"
    if rel.alias is not None:
        return f"{name} AS {quote(rel.alias.aliasname)}", quote(rel.alias.aliasname)
    return name, quote(shape.collection.table)


def _path_slot(ref: str, part: PathPart) -> str:
    col = f"{ref}.{quote(part.column)}"
    if part.parent_fallback:
        col = f"coalesce({col}, {ref}._parent_id)"
    return f"pg_catalog.to_jsonb({col})"


def _targets(targets: tuple[ast.ResTarget, ...] | list[ast.ResTarget]) -> str:
    return deparse(ast.SelectStmt(targetList=tuple(targets)))[len("SELECT ") :]


def _idem() -> str:
    """The session's settings for the calls: slots "idem" and "params"."""
    return (
        f"pg_catalog.to_jsonb(pg_catalog.current_setting('{IDEMPOTENCY_SETTING}', true)), "
        f"pg_catalog.to_jsonb(pg_catalog.current_setting('{PARAMS_SETTING}', true))"
    )


def _statement(stmt: ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt, returning: str) -> str:
    """The client's statement, deparsed, with ``returning`` as its RETURNING list."""
    bare = type(stmt)(stmt())
    bare.returningClause = None
    return f"{deparse(bare)} RETURNING {returning}"


def _checked(stmt: ast.InsertStmt | ast.UpdateStmt) -> list[str]:
    """The client's RETURNING list, run in the trial too (its values unused: RETURNING is
    evaluated on the stored rows) so that PostgreSQL refuses it (a column the role may
    not read, a division by zero) before anything reaches Stripe."""
    ret = stmt.returningClause
    return [_targets(ret.exprs)] if ret is not None and ret.exprs else []


def evaluation(
    stmt: ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt, shape: WriteShape
) -> Evaluation:
    if isinstance(stmt, ast.InsertStmt):
        return _insert(stmt, shape)
    if isinstance(stmt, ast.UpdateStmt):
        return _update(stmt, shape)
    return _delete(stmt, shape)


def _insert(stmt: ast.InsertStmt, shape: WriteShape) -> Evaluation:
    _, ref = _table(shape, stmt.relation)
    given = [col.name for col in stmt.cols or ()]
    out = Evaluation(sql="", given=given)
    occ = stmt.onConflictClause
    if occ is not None:
        out.conflict = "nothing"
        out.key = f"v:{shape.key}"
        if occ.action == OnConflictAction.ONCONFLICT_UPDATE:
            out.conflict = "update"
            out.sets = [t.name for t in occ.targetList or () if t.name in shape.columns]
    names = list(dict.fromkeys([*given, *out.sets]))
    if out.key is not None and shape.key not in names:
        names.append(shape.key)
    slots = [_json(f"{ref}.{quote(n)}", shape.columns[n]) for n in names]
    out.slots = [f"v:{n}" for n in names] + ["idem", "params"]
    out.sql = _statement(stmt, ", ".join([*slots, _idem(), *_checked(stmt)]))
    return out


def _update(stmt: ast.UpdateStmt, shape: WriteShape) -> Evaluation:
    _, ref = _table(shape, stmt.relation)
    update = shape.update
    assert update is not None
    slots = [f"pg_catalog.to_jsonb({ref}.{quote(shape.key)})"]
    out = Evaluation(sql="", slots=["key"], key="key")
    for part in update.path:
        slots.append(_path_slot(ref, part))
        out.slots.append(f"path:{part.brace}")
    for target in stmt.targetList or ():
        column = shape.columns[target.name]
        if target.name in out.sets:
            continue  # PostgreSQL refuses a column set twice
        out.sets.append(target.name)
        slots.append(_json(f"{ref}.{quote(target.name)}", column))
        out.slots.append(f"v:{target.name}")
    slots.append(_idem())
    out.slots += ["idem", "params"]
    out.sql = _statement(stmt, ", ".join([*slots, *_checked(stmt)]))
    return out


def _delete(stmt: ast.DeleteStmt, shape: WriteShape) -> Evaluation:
    _, ref = _table(shape, stmt.relation)
    delete = shape.delete
    assert delete is not None
    slots = [f"pg_catalog.to_jsonb({ref}.{quote(shape.key)})"]
    out = Evaluation(sql="", slots=["key"], key="key")
    for part in delete.path:
        slots.append(_path_slot(ref, part))
        out.slots.append(f"path:{part.brace}")
    slots.append(_idem())
    out.slots += ["idem", "params"]
    returning = ", ".join(slots)
    ret = stmt.returningClause
    if ret is not None and ret.exprs:
        out.returning = -1  # the count comes from the statement's description
        returning += ", " + _targets(ret.exprs)
    out.sql = _statement(stmt, returning)
    return out


def current_values_query(shape: WriteShape, columns: list[str]) -> str:
    """The stored values of ``columns`` of the rows whose keys are ``%s`` (text[]), as JSON:
    (key, value, ...). Run on the proxy's own connection."""
    table = f"{quote(shape.schema)}.{quote(shape.collection.table)}"
    key = quote(shape.key)
    values = [_json(quote(n), shape.columns[n]) for n in columns]
    return f"SELECT {', '.join([key, *values])} FROM {table} WHERE {key} = ANY(%s)"


def returning_query(
    stmt: ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt, shape: WriteShape, keys_param: int
) -> str | None:
    """RETURNING evaluated on the stored rows whose keys are ``$keys_param`` (text[])."""
    ret = stmt.returningClause
    if ret is None or not ret.exprs:
        return None
    table, ref = _table(shape, stmt.relation)
    keys = f"CAST(${keys_param} AS text[])"
    key = f"{ref}.{quote(shape.key)}"
    return (
        f"{_with(stmt.withClause)}SELECT {_targets(ret.exprs)} FROM {table} "
        f"WHERE {key} = ANY({keys}) ORDER BY array_position({keys}, {key})"
    )
