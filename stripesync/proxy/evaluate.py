"""The queries that make PostgreSQL evaluate a write before it goes to Stripe.

The proxy does not interpret SQL expressions: it rewrites the client's INSERT, UPDATE or
DELETE into a SELECT of the same expressions (deparsed verbatim from pglast's tree, the
client's ``$n`` parameters kept) and runs it on the client's own session:

- INSERT: ``SELECT <each given column, cast to its type> FROM (<VALUES or SELECT>) AS
  _v(<columns>)``; each VALUES cell is cast to its column's type as INSERT would coerce
  it, DEFAULT is NULL (not given). With ``ON CONFLICT (id)`` the proposed rows become
  ``excluded`` (every column of the table, NULL where not given) LEFT JOINed to the
  table, and the DO UPDATE SET expressions and WHERE are evaluated for the rows that
  exist;
- UPDATE: ``SELECT <key>, <path columns>, <each SET column: its current value, its new
  value> FROM <table> [, <FROM items>] WHERE <where>``;
- DELETE: ``SELECT <key>, <path columns> [, <RETURNING list>] FROM <table> [, <USING
  items>] WHERE <where>``: the RETURNING of a DELETE is evaluated before the row goes.

Every value comes back as ``to_jsonb(...)`` text (timestamps as Unix seconds), so the
handler decodes JSON only. After Stripe answered and the copy is stored, RETURNING is
``SELECT <RETURNING list> FROM <table> WHERE <key> = ANY($n+1)`` on the client's session.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pglast import ast
from pglast.enums.nodes import OnConflictAction

from stripesync.proxy.analyze import deparse
from stripesync.proxy.params import PathPart, WriteShape
from stripesync.schema.columns import Column, Kind

__all__ = ["Evaluation", "evaluation", "quote", "returning_query"]

IDEMPOTENCY_SETTING = "stripesync.idempotency_key"
PARAMS_SETTING = "stripesync.params"  # extra Stripe parameters (JSON) for every call


def quote(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


@dataclass(slots=True)
class Evaluation:
    """A SELECT that evaluates a write, and what each of its output columns holds.

    ``slots`` name the JSON outputs in order ("v:email", "key", "exists", "old:email",
    "new:email", "do", "path:customer", "idem", "params"); ``returning`` outputs follow them (a
    DELETE's RETURNING, in the client's formats)."""

    sql: str
    slots: list[str] = field(default_factory=list)
    returning: int = 0  # number of RETURNING outputs after the slots (DELETE only)
    given: list[str] = field(default_factory=list)  # INSERT: the columns named
    sets: list[str] = field(default_factory=list)  # UPDATE / DO UPDATE: the SET columns
    conflict: str | None = None  # None, "nothing", "update"


def _json(expr: str, column: Column) -> str:
    if column.kind is Kind.TIME:
        return f"to_jsonb(extract(epoch FROM {expr}))"
    return f"to_jsonb({expr})"


def _cast(expr: str, column: Column) -> str:
    return f"CAST({expr} AS {column.pg_type})"


def _value(node: ast.Node) -> str:
    """A VALUES cell or SET value: DEFAULT is NULL (not given / unset)."""
    if isinstance(node, ast.SetToDefault):
        return "NULL"
    return f"({deparse(node)})"


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
    return f"to_jsonb({col})"


def _targets(targets: tuple[ast.ResTarget, ...] | list[ast.ResTarget]) -> str:
    return deparse(ast.SelectStmt(targetList=tuple(targets)))[len("SELECT ") :]


def _idem() -> str:
    """The session's settings for the calls: slots "idem" and "params"."""
    return (
        f"to_jsonb(current_setting('{IDEMPOTENCY_SETTING}', true)), "
        f"to_jsonb(current_setting('{PARAMS_SETTING}', true))"
    )


def evaluation(
    stmt: ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt, shape: WriteShape
) -> Evaluation:
    if isinstance(stmt, ast.InsertStmt):
        return _insert(stmt, shape)
    if isinstance(stmt, ast.UpdateStmt):
        return _update(stmt, shape)
    return _delete(stmt, shape)


def _source(stmt: ast.InsertStmt, shape: WriteShape, given: list[str]) -> str:
    """The proposed rows, as ``(<query>) AS _v(<columns>)``."""
    select = stmt.selectStmt
    columns = [shape.columns[name] for name in given]
    alias = f"_v({', '.join(quote(n) for n in given)})" if given else "_v"
    if select is None:  # DEFAULT VALUES
        return f"(SELECT) AS {alias}"
    assert isinstance(select, ast.SelectStmt)
    pure_values = (
        select.valuesLists
        and not select.sortClause
        and select.limitCount is None
        and select.limitOffset is None
        and select.withClause is None
    )
    if pure_values:
        rows = []
        for cells in select.valuesLists:
            cast = [_cast(_value(cell), col) for cell, col in zip(cells, columns, strict=False)]
            rows.append(f"({', '.join(cast)})")
        return f"(VALUES {', '.join(rows)}) AS {alias}"
    return f"({deparse(select)}) AS {alias}"


def _insert(stmt: ast.InsertStmt, shape: WriteShape) -> Evaluation:
    given = [col.name for col in stmt.cols or ()]
    source = _source(stmt, shape, given)
    typed = {name: _cast(f"_v.{quote(name)}", shape.columns[name]) for name in given}
    occ = stmt.onConflictClause
    out = Evaluation(sql="", given=given)
    if occ is None:
        slots = [_json(typed[n], shape.columns[n]) for n in given]
        out.slots = [f"v:{n}" for n in given] + ["idem", "params"]
        out.sql = f"{_with(stmt.withClause)}SELECT {', '.join([*slots, _idem()])} FROM {source}"
        return out
    # ON CONFLICT: the proposed rows are `excluded`, joined to the rows that exist
    table, ref = _table(shape, stmt.relation)
    key = quote(shape.key)
    everything = [
        f"{typed[c.name]} AS {quote(c.name)}"
        if c.name in typed
        else f"{_cast('NULL', c)} AS {quote(c.name)}"
        for c in shape.columns.values()
    ]
    slots = [_json(f"excluded.{quote(n)}", shape.columns[n]) for n in given]
    out.slots = [f"v:{n}" for n in given] + ["exists"]
    slots.append(f"to_jsonb({ref}.{key} IS NOT NULL)")
    if occ.action == OnConflictAction.ONCONFLICT_UPDATE:
        out.conflict = "update"
        exists = f"{ref}.{key} IS NOT NULL"
        for target in occ.targetList or ():
            column = shape.columns.get(target.name)
            if column is None:  # refused earlier by the column check
                continue
            out.sets.append(target.name)
            new = _json(_cast(_value(target.val), column), column)
            old = _json(f"{ref}.{quote(target.name)}", column)
            slots.append(f"CASE WHEN {exists} THEN {old} END")
            slots.append(f"CASE WHEN {exists} THEN {new} END")
            out.slots += [f"old:{target.name}", f"new:{target.name}"]
        where = f"coalesce(({deparse(occ.whereClause)}), false)" if occ.whereClause else "true"
        slots.append(f"to_jsonb(CASE WHEN {exists} THEN {where} ELSE false END)")
        out.slots.append("do")
    else:
        out.conflict = "nothing"
    slots.append(_idem())
    out.slots += ["idem", "params"]
    out.sql = (
        f"{_with(stmt.withClause)}SELECT {', '.join(slots)} "
        f"FROM (SELECT {', '.join(everything)} FROM {source}) AS excluded "
        f"LEFT JOIN {table} ON {ref}.{key} = excluded.{key}"
    )
    return out


def _update(stmt: ast.UpdateStmt, shape: WriteShape) -> Evaluation:
    table, ref = _table(shape, stmt.relation)
    update = shape.update
    assert update is not None
    slots = [f"to_jsonb({ref}.{quote(shape.key)})"]
    out = Evaluation(sql="", slots=["key"])
    for part in update.path:
        slots.append(_path_slot(ref, part))
        out.slots.append(f"path:{part.brace}")
    for target in stmt.targetList or ():
        column = shape.columns[target.name]
        out.sets.append(target.name)
        slots.append(_json(f"{ref}.{quote(target.name)}", column))
        slots.append(_json(_cast(_value(target.val), column), column))
        out.slots += [f"old:{target.name}", f"new:{target.name}"]
    slots.append(_idem())
    out.slots += ["idem", "params"]
    sources = [table, *(deparse(item) for item in stmt.fromClause or ())]
    where = f" WHERE {deparse(stmt.whereClause)}" if stmt.whereClause is not None else ""
    out.sql = f"{_with(stmt.withClause)}SELECT {', '.join(slots)} FROM {', '.join(sources)}{where}"
    return out


def _delete(stmt: ast.DeleteStmt, shape: WriteShape) -> Evaluation:
    table, ref = _table(shape, stmt.relation)
    delete = shape.delete
    assert delete is not None
    slots = [f"to_jsonb({ref}.{quote(shape.key)})"]
    out = Evaluation(sql="", slots=["key"])
    for part in delete.path:
        slots.append(_path_slot(ref, part))
        out.slots.append(f"path:{part.brace}")
    slots.append(_idem())
    out.slots += ["idem", "params"]
    select = ", ".join(slots)
    ret = stmt.returningClause
    if ret is not None and ret.exprs:
        out.returning = -1  # the count comes from the statement's description
        select += ", " + _targets(ret.exprs)
    sources = [table, *(deparse(item) for item in stmt.usingClause or ())]
    where = f" WHERE {deparse(stmt.whereClause)}" if stmt.whereClause is not None else ""
    out.sql = f"{_with(stmt.withClause)}SELECT {select} FROM {', '.join(sources)}{where}"
    return out


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
