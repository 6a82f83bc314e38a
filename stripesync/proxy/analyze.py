"""Which statements write to a synced table, parsed with PostgreSQL's own parser (pglast).

:func:`analyze` finds every place a statement text writes to a table whose name is one of
the synced tables: the target of an INSERT, UPDATE, DELETE or MERGE at any depth (a
data-modifying WITH, an EXPLAIN ANALYZE, a PREPARE), a TRUNCATE, a COPY ... FROM, and a
schema-qualified write inside a DO block's body. A name written without a schema is a
candidate too: whether the session's search_path resolves it to the synced schema is
decided later, on the session (:attr:`Analysis.unqualified`).

Only one shape is taken over and sent to Stripe: a statement of its own that is an
INSERT, UPDATE or DELETE of a synced table with no other data-modifying part
(:attr:`Analysis.write`). Every other write to a synced table is refused by the handler
with the reason :func:`refusal_reason` gives; it never reaches PostgreSQL.

A text pglast cannot parse is left to PostgreSQL (it is PostgreSQL's own parser: the
server refuses the same text with its own syntax error).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream

__all__ = [
    "Analysis",
    "Target",
    "WriteKind",
    "analyze",
    "deparse",
    "might_write",
    "refusal_reason",
]

# A cheap prefilter: a statement without one of these words writes nothing.
_WRITE_WORDS = re.compile(r"\b(insert|update|delete|merge|truncate|copy|do)\b", re.IGNORECASE)


class WriteKind(StrEnum):
    INSERT = "INSERT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class Target:
    """A table a statement writes to: ``schema`` None when the name is unqualified."""

    schema: str | None
    table: str
    how: str  # "INSERT", "data-modifying WITH", "MERGE", "TRUNCATE", "COPY FROM", ...

    def qualified(self, schema: str | None = None) -> str:
        return f"{schema or self.schema}.{self.table}" if (schema or self.schema) else self.table


@dataclass(frozen=True, slots=True)
class Analysis:
    """What a statement text writes, as far as the synced tables are concerned."""

    sql: str
    statements: int
    targets: tuple[Target, ...]  # every write to a (possibly) synced table
    # The one statement, when it is a plain INSERT/UPDATE/DELETE of a candidate table.
    write: ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt | None
    write_target: Target | None

    @property
    def unqualified(self) -> tuple[str, ...]:
        """Table names to resolve with the session's search_path."""
        return tuple(sorted({t.table for t in self.targets if t.schema is None}))


def might_write(sql: str) -> bool:
    return _WRITE_WORDS.search(sql) is not None


def analyze(sql: str, tables: frozenset[str], schema: str) -> Analysis | None:
    """The writes of ``sql`` to tables named in ``tables`` (of ``schema``, or unqualified).

    None when the text cannot be parsed (PostgreSQL will refuse it the same way)."""
    try:
        stmts = parse_sql(sql)
    except ParseError:
        return None
    targets: list[Target] = []
    for raw in stmts:
        for target in _writes(raw.stmt, top=True):
            if target.table in tables and target.schema in (None, schema):
                targets.append(target)
    write: ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt | None = None
    write_target: Target | None = None
    if len(stmts) == 1:
        stmt = stmts[0].stmt
        if isinstance(stmt, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt):
            rel = stmt.relation
            t = Target(rel.schemaname, rel.relname, write_kind(stmt).value)
            if t in targets:
                write, write_target = stmt, t
    return Analysis(sql, len(stmts), tuple(dict.fromkeys(targets)), write, write_target)


def refusal_reason(analysis: Analysis, synced: list[Target], schema: str) -> str | None:
    """Why the handler cannot take this statement over (None: it can).

    ``synced`` are the targets that are synced tables once names are resolved."""
    top = analysis.write_target
    if top is not None and synced == [top]:
        assert analysis.write is not None
        return _unsupported_in(analysis.write)
    if analysis.statements > 1:
        return (
            "a write to a synced table must be sent as a statement of its own, not in a "
            "query string with several statements"
        )
    first = next((t for t in synced if t != top), synced[0])
    return (
        f"{first.how} writing to {schema}.{first.table} cannot be analysed; writes to synced "
        "tables "
        "go to Stripe only as a plain INSERT, UPDATE or DELETE statement"
    )


def deparse(node: ast.Node) -> str:
    """SQL text for a node, as PostgreSQL would print it."""
    return str(RawStream()(node))


# ---- internals ---------------------------------------------------------------------------


def write_kind(stmt: ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt) -> WriteKind:
    if isinstance(stmt, ast.InsertStmt):
        return WriteKind.INSERT
    if isinstance(stmt, ast.UpdateStmt):
        return WriteKind.UPDATE
    return WriteKind.DELETE


def _children(node: ast.Node) -> Iterator[ast.Node]:
    for name in node.__slots__:
        value = getattr(node, name, None)
        if isinstance(value, ast.Node):
            yield value
        elif isinstance(value, tuple | list):
            for item in value:
                if isinstance(item, ast.Node):
                    yield item
                elif isinstance(item, tuple | list):
                    yield from (x for x in item if isinstance(x, ast.Node))


_DML = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)
# A write to a schema-qualified table inside a DO block's body (a string pglast does not parse).
_BODY_WRITE = re.compile(
    r"\b(insert\s+into|update|delete\s+from|merge\s+into|truncate(?:\s+table)?|copy)"
    r"\s+(?:only\s+)?\"?([a-z_][a-z0-9_$]*)\"?\s*\.\s*\"?([a-z_][a-z0-9_$]*)\"?",
    re.IGNORECASE,
)


def _writes(root: ast.Node, *, top: bool) -> Iterator[Target]:
    """Every table ``root`` writes to (DML targets at any depth; iterative: expressions
    nest thousands deep)."""
    stack: list[tuple[ast.Node, bool]] = [(root, top)]
    while stack:
        node, is_top = stack.pop()
        if isinstance(node, _DML):
            rel = node.relation
            if isinstance(node, ast.MergeStmt):
                how = "MERGE"
            elif is_top:
                how = write_kind(node).value
            else:
                how = f"a nested {write_kind(node).value} (data-modifying WITH, EXPLAIN or PREPARE)"
            yield Target(rel.schemaname, rel.relname, how)
        elif isinstance(node, ast.TruncateStmt):
            for rel in node.relations or ():
                yield Target(rel.schemaname, rel.relname, "TRUNCATE")
        elif isinstance(node, ast.CopyStmt) and node.is_from and node.relation is not None:
            rel = node.relation
            yield Target(rel.schemaname, rel.relname, "COPY FROM")
        elif isinstance(node, ast.ExplainStmt) and not _explain_analyze(node):
            continue  # a plan only: nothing runs
        elif isinstance(node, ast.DoStmt):
            for arg in node.args or ():
                body = getattr(getattr(arg, "arg", None), "sval", None)
                if isinstance(body, str):
                    for m in _BODY_WRITE.finditer(body):
                        yield Target(m.group(2).lower(), m.group(3).lower(), "a DO block")
        stack.extend((child, False) for child in _children(node))


def _explain_analyze(node: ast.ExplainStmt) -> bool:
    for opt in node.options or ():
        if getattr(opt, "defname", None) == "analyze":
            arg = getattr(opt, "arg", None)
            value = getattr(arg, "sval", None) or getattr(arg, "boolval", None)
            return arg is None or value not in ("false", "off", "0", False)
    return False


def _unsupported_in(stmt: ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt) -> str | None:
    """Parts of a write the handler does not take over (None: all of it is fine)."""
    for child in _children(stmt):
        for node in _walk(child):
            if isinstance(node, _DML):
                return (
                    "a write to a synced table cannot have a data-modifying WITH (or another "
                    "INSERT, UPDATE, DELETE or MERGE inside it)"
                )
            if isinstance(node, ast.CurrentOfExpr):
                return "WHERE CURRENT OF is not supported on synced tables"
    ret = stmt.returningClause
    if ret is not None:
        if ret.options:
            return "RETURNING WITH (OLD/NEW ...) is not supported on synced tables"
        ref = _ref_name(stmt.relation)
        for expr in ret.exprs or ():
            for node in _walk(expr):
                if isinstance(node, ast.ColumnRef) and len(node.fields) > 1:
                    head = node.fields[0]
                    name = getattr(head, "sval", None)
                    if name in ("old", "new") and name != ref:
                        return f"RETURNING {name}.* is not supported on synced tables"
    if isinstance(stmt, ast.InsertStmt):
        if not stmt.cols and stmt.selectStmt is not None:  # DEFAULT VALUES is fine
            return (
                "name the columns of an INSERT into a synced table: INSERT INTO t (col, ...) "
                "VALUES (...)"
            )
        for col in stmt.cols or ():
            if col.indirection:
                return f'INSERT into a part of column "{col.name}" is not supported'
        occ = stmt.onConflictClause
        if occ is not None and occ.infer is not None and occ.infer.conname:
            return "ON CONFLICT ON CONSTRAINT is not supported: use ON CONFLICT (id)"
    if isinstance(stmt, ast.UpdateStmt):
        for target in stmt.targetList or ():
            if isinstance(target.val, ast.MultiAssignRef):
                return (
                    "SET (a, b) = (...) is not supported on synced tables: assign each "
                    "column on its own"
                )
            if target.indirection:
                return (
                    f'SET of a part of column "{target.name}" is not supported: assign the '
                    f"whole value (for jsonb: {target.name} = {target.name} || '{{...}}')"
                )
        if stmt.fromClause and stmt.returningClause is not None:
            return "UPDATE ... FROM ... RETURNING is not supported on synced tables"
    return None


def _walk(root: ast.Node) -> Iterator[ast.Node]:
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(_children(node))


def _ref_name(rel: ast.RangeVar) -> str:
    return rel.alias.aliasname if rel.alias is not None else rel.relname
