"""The write handler: INSERT, UPDATE and DELETE on synced tables become Stripe calls.

For a statement that writes a synced table (see :mod:`stripesync.proxy.analyze`):

1. **Resolve and check.** Unqualified table names are resolved with the session's
   search_path (a table of another schema passes through untouched). A write the proxy
   cannot analyse, a collection or column Stripe does not let one write, is refused with
   a PostgreSQL error that names it and says what is allowed (:mod:`.params`).
2. **PostgreSQL evaluates and authorises.** The statement is described on the client's
   session (its parameter types; for the simple protocol PostgreSQL also checks the whole
   statement), then the client's statement itself runs there with the proxy's RETURNING
   list, inside a savepoint (or a transaction) rolled back at once: the *trial*
   (:mod:`.evaluate`). PostgreSQL applies the client's role, privileges, row-level
   security, read-only mode and search_path, with the client's own parameter values and
   formats; what it refuses is refused, and nothing reaches Stripe. The schema's guard
   (:mod:`stripesync.schema.guard`) is what keeps the same statement, sent straight to
   PostgreSQL, from being committed.
3. **Stripe.** One call per affected row (create, update, delete, or the collection's
   equivalent such as a subscription's cancel), concurrently within the StripeApi's rate
   limiter, each with its own idempotency key. After a refusal no new call starts.
4. **Store.** The objects Stripe returned are written through :class:`Store` on a pooled
   connection of the proxy's own, committed at once: a client ROLLBACK cannot undo a
   Stripe change, so the copy does not roll back either. Deleted objects leave a
   tombstone; a canceled subscription keeps its row.
5. **Reply.** RETURNING is evaluated on the stored rows on the client's session, then
   the rows (in the formats the client's Bind asked for) and ``INSERT 0 n`` /
   ``UPDATE n`` / ``DELETE n``. A refusal goes through ``session.reject`` so the
   client's transaction is left failed exactly as PostgreSQL would leave it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson
from pglast import ast
from pglast.enums.nodes import OnConflictAction
from psycopg_pool import AsyncConnectionPool

from stripesync.catalog import Catalog, Collection, build_catalog
from stripesync.catalog.objects import embedded_children, parent_id
from stripesync.obs.metrics import record_proxy_write
from stripesync.proxy.analyze import (
    Analysis,
    Target,
    WriteKind,
    analyze,
    might_write,
    write_kind,
)
from stripesync.proxy.analyze import refusal_reason as _refusal_reason
from stripesync.proxy.evaluate import (
    PARAMS_SETTING,
    Evaluation,
    current_values_query,
    evaluation,
    quote,
    returning_query,
)
from stripesync.proxy.hooks import ExtendedCall, ProxySession
from stripesync.proxy.messages import (
    BackendMessage,
    Bind,
    Close,
    CommandComplete,
    DataRow,
    Describe,
    ErrorResponse,
    Execute,
    FrontendMessage,
    NoticeResponse,
    ParameterDescription,
    Parse,
    Query,
    ReadyForQuery,
    RowDescription,
    Sync,
)
from stripesync.proxy.params import Verb, WriteShape, shape_for
from stripesync.proxy.refusals import (
    CARDINALITY_VIOLATION,
    FEATURE_NOT_SUPPORTED,
    INVALID_PARAMETER_VALUE,
    NO_DATA_FOUND,
    WARNING,
    Refusal,
    stripe_refusal,
)
from stripesync.schema.guard import GUARD_TRIGGER, PENDING_KEY_PREFIX
from stripesync.store.store import Incoming, Store, fetch_time
from stripesync.stripe_api.client import StripeApi, StripeApiError

__all__ = ["StripeWriteHandler"]

log = logging.getLogger("stripesync.proxy.writes")

_STMT = "stripesync_write"  # the handler's own prepared statement and portal names
_TEXT_ARRAY = 1009  # text[]
# Fields naming the parent of a nested object (as the sync reads them).


_TRIAL = "stripesync_trial"  # the savepoint of a trial


class _Failed(Exception):
    """PostgreSQL refused one of the handler's statements: its error goes to the client.

    ``server_failed``: the server is failed along (the client's transaction aborted, or
    an extended-protocol batch skipped up to Sync) as after the client's own statement;
    when False the handler must make it fail (``session.reject``)."""

    def __init__(self, error: ErrorResponse, *, server_failed: bool = True) -> None:
        super().__init__(error.message)
        self.error = error
        self.server_failed = server_failed


@dataclass(slots=True)
class _Result:
    rows: list[DataRow] = field(default_factory=list)
    params: ParameterDescription | None = None
    description: RowDescription | None = None


@dataclass(slots=True)
class _Call:
    """One Stripe call for one row of the statement."""

    row: int
    verb: Verb
    method: str  # post / delete
    path: str
    params: dict[str, Any]
    key: str | None  # the row's object id (update, delete)
    parent_id: str | None
    idempotency_key: str | None
    stripe_version: str | None = None  # legacy endpoints: a version that still has them


class _Session:
    """The client's session as the handler uses it: statements run with its parameters."""

    def __init__(
        self, session: ProxySession, call: ExtendedCall | None, *, extended: bool = False
    ) -> None:
        self.session = session
        self.call = call
        self._extended = extended or call is not None
        self.types: tuple[int, ...] = ()
        self.formats: tuple[int, ...] = ()
        self.values: tuple[bytes | None, ...] = ()
        if call is not None:
            n = len(call.bind.params)
            self.values = call.bind.params
            self.formats = tuple(call.bind.param_format(i) for i in range(n))

    @property
    def extended(self) -> bool:
        """In the client's extended-protocol batch: no Sync of the handler's own."""
        return self._extended

    async def _exchange(self, *messages: FrontendMessage) -> _Result:
        if not self.extended:
            messages = (*messages, Sync())
        answer = await self.session.exchange(*messages)
        out = _Result()
        for message in answer:
            if isinstance(message, ErrorResponse):
                raise _Failed(message)
            if isinstance(message, DataRow):
                out.rows.append(message)
            elif isinstance(message, ParameterDescription):
                out.params = message
            elif isinstance(message, RowDescription):
                out.description = message
        return out

    async def describe(self, sql: str) -> _Result:
        """The statement's parameter types and result columns, as PostgreSQL sees them.

        For the simple protocol this parses the statement too, so PostgreSQL checks it
        (columns, types, RETURNING) before anything is sent to Stripe."""
        if self.call is not None:
            result = await self._exchange(Describe("S", self.call.bind.statement))
        else:
            result = await self._exchange(
                Close("S", _STMT), Parse(_STMT, sql), Describe("S", _STMT), Close("S", _STMT)
            )
        if result.params is not None:
            self.types = result.params.type_oids
        return result

    async def run(
        self,
        sql: str,
        *,
        extra: Sequence[tuple[int, bytes | None]] = (),
        result_formats: tuple[int, ...] = (0,),
        client_params: bool = True,
    ) -> list[DataRow]:
        """Run ``sql`` with the client's parameters ($1..$n) and ``extra`` ones after."""
        mine = (self.types, self.formats, self.values) if client_params else ((), (), ())
        types = (*mine[0], *(oid for oid, _ in extra))
        formats = (*mine[1], *(0 for _ in extra))
        values = (*mine[2], *(value for _, value in extra))
        result = await self._exchange(*_statement(sql, types, formats, values, result_formats))
        return result.rows

    async def trial(
        self, sql: str, schema: str, *, result_formats: tuple[int, ...] = (0,)
    ) -> list[DataRow]:
        """Run the client's write ``sql`` (with its parameters) and roll it back at once.

        Inside the client's transaction block: in a savepoint, rolled back. Outside: in a
        transaction of its own, rolled back. In an extended-protocol batch that executed
        statements already (a pipeline), a Sync first ends the batch's implicit
        transaction (committing what it did, as the batch's Sync would have) and tells
        whether a transaction block is open. The schema's guard is deferred for the
        trial's length, whatever the client set with SET CONSTRAINTS.
        """
        session = self.session
        if self.extended and session.executed_in_batch:
            await session.exchange(Sync())
        block = session.transaction_status != "I"
        guard = f"SET CONSTRAINTS {quote(schema)}.{quote(GUARD_TRIGGER)} DEFERRED"
        if block:
            before = [f"SAVEPOINT {_TRIAL}", guard]
            after = [f"ROLLBACK TO SAVEPOINT {_TRIAL}", f"RELEASE SAVEPOINT {_TRIAL}"]
        else:
            before, after = ["BEGIN", guard], ["ROLLBACK"]
        messages: list[FrontendMessage] = [m for q in before for m in _utility(q)]
        messages += _statement(sql, self.types, self.formats, self.values, result_formats)
        messages += [m for q in after for m in _utility(q)]
        if not block or not self.extended:
            # the trial's own transaction ends here, whatever happens; a simple Query's
            # statements end with a Sync too
            messages.append(Sync())
        answer = await session.exchange(*messages)
        rows: list[DataRow] = []
        for message in answer:
            if isinstance(message, ErrorResponse):
                if block:  # the client's transaction fails, as it would have
                    raise _Failed(message)
                await session.exchange(Query("ROLLBACK"))  # out of the failed transaction
                raise _Failed(message, server_failed=not self.extended)
            if isinstance(message, DataRow):
                rows.append(message)
        return rows


class StripeWriteHandler:
    """The :class:`~stripesync.proxy.hooks.WriteHandler` that sends writes to Stripe.

    ``api`` makes the Stripe calls (its rate limiter bounds them); ``pool`` gives the
    connections the returned objects are stored on (as the sync's owner role: see
    :mod:`stripesync.proxy.roles`). ``concurrency`` bounds the calls of one statement in
    flight at a time; ``store_lock_timeout`` bounds how long storing waits for a row
    lock (a client that locked the row in its own open transaction).
    """

    def __init__(
        self,
        api: StripeApi | None,
        pool: AsyncConnectionPool | None,  # type: ignore[type-arg]
        *,
        schema: str = "stripe",
        catalog: Catalog | None = None,
        concurrency: int = 64,
        store_lock_timeout: float = 5.0,
        refuse: str | None = None,
    ) -> None:
        self.api = api
        # a reason to refuse every write to a synced table (a proxy with no Stripe key)
        self.refuse = refuse
        self.pool = pool
        self.schema = schema
        self.catalog = catalog or build_catalog()
        self.concurrency = max(1, concurrency)
        self.store_lock_timeout = store_lock_timeout
        self.store = Store(schema)
        self._by_table: dict[str, Collection] = {c.table: c for c in self.catalog}
        self._tables = frozenset(self._by_table)
        self._shapes: dict[str, WriteShape] = {}

    # ---- the WriteHandler protocol -------------------------------------------------------

    def claims(self, sql: str) -> bool:
        analysis = self._analyze(sql)
        return analysis is not None and bool(analysis.targets)

    async def handle_query(self, session: ProxySession, query: Query) -> bool:
        if session.transaction_status == "E":
            return False  # the server refuses it: the transaction is aborted
        return await self._handle(_Session(session, None), query.query)

    async def handle_execute(self, session: ProxySession, call: ExtendedCall) -> bool:
        return await self._handle(_Session(session, call), call.parse.query)

    async def handle_parse(self, session: ProxySession, parse: Parse) -> bool:
        """Refuse at Parse a write that could never be made (its Execute would be refused).

        PostgreSQL refuses an unknown column at Parse, with no word of what is
        writable; a read-only column or a collection Stripe does not let one write
        would only be refused at Execute. Both get the refusal the simple protocol
        gives, naming what is allowed."""
        if session.transaction_status == "E":
            return False  # the server refuses it: the transaction is aborted
        analysis = self._analyze(parse.query)
        if analysis is None or not analysis.targets:
            return False
        started = time.perf_counter()
        s = _Session(session, None, extended=True)
        try:
            synced = await self._synced_targets(s, analysis)
        except _Failed:
            return False  # the server will say why when it parses it
        if not synced:
            return False
        try:
            self._allowed(analysis, synced)
        except Refusal as refusal:
            collection = self._by_table[synced[0].table]
            await self._refuse(session, collection, refusal, started, " at Parse")
            return True
        return False

    # ---- the steps -----------------------------------------------------------------------

    def _analyze(self, sql: str) -> Analysis | None:
        if not might_write(sql):
            return None
        return _cached_analysis(sql, self._tables, self.schema)

    def shape(self, collection: Collection) -> WriteShape:
        shape = self._shapes.get(collection.name)
        if shape is None:
            shape = self._shapes[collection.name] = shape_for(collection, self.schema)
        return shape

    async def _handle(self, s: _Session, sql: str) -> bool:
        analysis = self._analyze(sql)
        if analysis is None or not analysis.targets:
            return False
        started = time.perf_counter()
        collection: Collection | None = None
        try:
            synced = await self._synced_targets(s, analysis)
            if not synced:
                return False  # the names resolve to tables of other schemas
            collection = self._by_table[synced[0].table]  # named if it is refused
            collection = self._allowed(analysis, synced)
            reply = await self._write(s, analysis, collection)
        except Refusal as refusal:
            await self._refuse(s.session, collection, refusal, started)
            return True
        except _Failed as failed:  # PostgreSQL refused
            self._record(collection, "refused", started)
            if failed.error.code is not None:
                log.info(
                    "write to %s refused by PostgreSQL (%s)",
                    collection.name if collection is not None else "a synced table",
                    failed.error.code,
                )
            if not failed.server_failed and s.extended:
                await s.session.reject(failed.error)  # skips the batch up to Sync
                return True
            s.session.send(failed.error)
            if not s.extended:
                s.session.send(ReadyForQuery(s.session.transaction_status))
            return True
        self._record(collection, "accepted", started)
        log.info("write to %s accepted by Stripe", collection.name)
        s.session.reply(*reply)
        return True

    def _allowed(self, analysis: Analysis, synced: list[Target]) -> Collection:
        """The collection written, once Stripe lets one make this write (else Refusal):
        nothing is evaluated or sent yet."""
        reason = _refusal_reason(analysis, synced, self.schema) or self.refuse
        if reason is not None:
            raise Refusal(FEATURE_NOT_SUPPORTED, f"stripesync proxy: {reason}")
        assert analysis.write is not None and analysis.write_target is not None
        collection = self._by_table[analysis.write_target.table]
        self._check(analysis, collection)
        return collection

    async def _refuse(
        self,
        session: ProxySession,
        collection: Collection | None,
        refusal: Refusal,
        started: float,
        where: str = "",
    ) -> None:
        self._record(collection, "refused", started)  # before the client hears of it
        log.warning(
            "refused write to %s%s (%s): %s",
            collection.name if collection is not None else "a synced table",
            where,
            refusal.sqlstate,
            " ".join(str(refusal.message).split()),
        )
        await session.reject(refusal.to_error())

    def _record(self, collection: Collection | None, outcome: str, started: float) -> None:
        name = collection.name if collection is not None else "unknown"
        record_proxy_write(name, outcome, time.perf_counter() - started)

    async def _synced_targets(self, s: _Session, analysis: Analysis) -> list[Target]:
        """The targets that are synced tables, unqualified names resolved on the session."""
        where: dict[str, str | None] = {}
        names = analysis.unqualified
        if names:
            listed = ", ".join(_literal(n) for n in names)
            rows = await s.run(
                "SELECT n, (SELECT ns.nspname FROM pg_catalog.pg_class c "
                "JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace "
                "WHERE c.oid = pg_catalog.to_regclass(pg_catalog.quote_ident(n))) "
                f"FROM unnest(ARRAY[{listed}]::text[]) AS n",
                client_params=False,
            )
            for row in rows:
                name, schema = (_text(v) for v in row.values)
                if name is not None:
                    where[name] = schema
        out: list[Target] = []
        for t in analysis.targets:
            schema = t.schema if t.schema is not None else where.get(t.table)
            if schema == self.schema:
                out.append(t)
        return out

    async def _write(
        self, s: _Session, analysis: Analysis, collection: Collection
    ) -> list[BackendMessage]:
        """Evaluate, call Stripe, store; the reply to send (or a refusal raised)."""
        stmt = analysis.write
        assert stmt is not None
        kind = write_kind(stmt)
        shape = self.shape(collection)
        try:
            ev = evaluation(stmt, shape)
        except RecursionError:
            raise Refusal(
                FEATURE_NOT_SUPPORTED,
                "stripesync proxy: the statement nests too deeply to be analysed",
            ) from None
        described = await s.describe(analysis.sql)
        result_formats = s.call.bind.result_formats if s.call is not None else ()
        n_returning = len(described.description.fields) if described.description else 0
        eval_formats: tuple[int, ...] = (0,)
        if ev.returning:
            eval_formats = (0,) * len(ev.slots) + _expand(result_formats, n_returning)
        rows = await s.trial(ev.sql, self.schema, result_formats=eval_formats)
        decoded, tails = _decode(ev, rows)
        current = await self._current(shape, ev, decoded)
        calls, pre_returning = self._plan_calls(shape, kind, ev, decoded, tails, current)
        # Stripe
        results, failure = await self._call_stripe(calls)
        applied = [(c, obj) for c, obj in zip(calls, results, strict=True) if obj is not None]
        warning = await self._store(shape, applied)
        if failure is not None:
            row, err = failure
            raise stripe_refusal(
                err,
                applied=len(applied),
                total=len(calls),
                row=row,
                table=collection.table,
                schema=self.schema,
            )
        # the reply
        out: list[BackendMessage] = []
        if warning is not None:
            out.append(warning)
        if described.description is not None and not s.extended:
            out.append(described.description)
        keys = [_object_key(shape, c, obj) for c, obj in applied]
        if described.description is not None:
            if pre_returning is not None and not _keeps_row(shape, kind):
                done = {c.row for c, _ in applied}
                out.extend(DataRow(values) for i, values in pre_returning if i in done)
            else:
                query = returning_query(stmt, shape, len(s.types) + 1)
                if query is not None and keys:
                    array = _text_array([k for k in keys if k is not None])
                    try:
                        out.extend(
                            await s.run(
                                query,
                                extra=[(_TEXT_ARRAY, array)],
                                result_formats=result_formats,
                            )
                        )
                    except _Failed as failed:
                        raise _Failed(_after_stripe(failed.error)) from None
        count = len(applied)
        tag = {
            WriteKind.INSERT: f"INSERT 0 {count}",
            WriteKind.UPDATE: f"UPDATE {count}",
            WriteKind.DELETE: f"DELETE {count}",
        }[kind]
        out.append(CommandComplete(tag))
        if not s.extended:
            out.append(ReadyForQuery(s.session.transaction_status))
        return out

    def _check(self, analysis: Analysis, collection: Collection) -> None:
        """What Stripe lets one write, before PostgreSQL evaluates anything (Refusal)."""
        stmt = analysis.write
        assert stmt is not None
        shape = self.shape(collection)
        if write_kind(stmt) is WriteKind.INSERT:
            assert isinstance(stmt, ast.InsertStmt)
            occ = stmt.onConflictClause
            given = [c.name for c in stmt.cols or ()]
            create = shape.op(Verb.CREATE)
            custom_id = create.fields is not None and "id" in create.fields
            shape.check_columns(Verb.CREATE, given, allow_key=custom_id or occ is not None)
            if occ is not None:
                self._check_conflict_target(shape, occ, given)
                if occ.action == OnConflictAction.ONCONFLICT_UPDATE:
                    shape.check_columns(Verb.UPDATE, [t.name for t in occ.targetList or ()])
        elif isinstance(stmt, ast.UpdateStmt):
            shape.check_columns(Verb.UPDATE, [t.name for t in stmt.targetList or ()])
        else:
            shape.op(Verb.DELETE)

    def _check_conflict_target(self, shape: WriteShape, occ: Any, given: list[str]) -> None:
        elems = [getattr(e, "name", None) for e in (occ.infer.indexElems if occ.infer else ())]
        if occ.infer is not None and elems != [shape.key]:
            raise Refusal(
                FEATURE_NOT_SUPPORTED,
                f"stripesync proxy: ON CONFLICT on a synced table must name its key: "
                f"ON CONFLICT ({shape.key})",
                schema_name=self.schema,
                table_name=shape.collection.table,
            )
        if shape.key not in given:
            raise Refusal(
                FEATURE_NOT_SUPPORTED,
                f'stripesync proxy: INSERT ... ON CONFLICT must give column "{shape.key}"',
                schema_name=self.schema,
                table_name=shape.collection.table,
            )

    async def _current(
        self, shape: WriteShape, ev: Evaluation, rows: list[dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        """The stored values of the SET columns of the rows the trial updated (their
        ``jsonb`` is sent as a difference), by key: read on the proxy's own connection,
        which sees every row. A key missing from the result is a row that did not exist
        (an INSERT ... ON CONFLICT that creates)."""
        if ev.key is None or not rows:
            return {}
        keys = [str(r[ev.key]) for r in rows if r.get(ev.key) is not None]
        if not keys:
            return {}
        async with self.pool.connection() as conn:
            cur = await conn.execute(current_values_query(shape, ev.sets), (keys,))  # type: ignore[arg-type]
            found = await cur.fetchall()
        return {str(r[0]): dict(zip(ev.sets, r[1:], strict=True)) for r in found}

    def _plan_calls(
        self,
        shape: WriteShape,
        kind: WriteKind,
        ev: Evaluation,
        decoded: list[dict[str, Any]],
        tails: list[tuple[bytes | None, ...]],
        current: Mapping[str, Mapping[str, Any]],
    ) -> tuple[list[_Call], list[tuple[int, tuple[bytes | None, ...]]] | None]:
        """One Stripe call per row the trial wrote (checked before any call is made)."""
        statement = f"stripesync-{uuid.uuid4().hex}"
        calls: list[_Call] = []
        pre: list[tuple[int, tuple[bytes | None, ...]]] | None = [] if ev.returning else None
        seen: set[str] = set()
        for values, tail in zip(decoded, tails, strict=True):
            index = len(calls)
            client_key = values.get("idem")
            base = client_key if isinstance(client_key, str) and client_key else statement
            idem = f"{base}-{index}"
            if kind is WriteKind.INSERT:
                call = self._insert_call(shape, ev, values, current, index, idem, seen)
            else:
                key = str(values["key"])
                if key in seen:
                    continue  # never twice: PostgreSQL writes a row once per statement
                seen.add(key)
                parts = _parts(values)
                if kind is WriteKind.UPDATE:
                    new = {name: values[f"v:{name}"] for name in ev.sets}
                    call = self._update_call(
                        shape, index, key, new, current.get(key, {}), parts, idem
                    )
                else:
                    call = self._delete_call(shape, index, key, parts, idem)
                    if pre is not None:
                        pre.append((index, tail))
            if call is not None:
                call.params.update(_extra_params(values.get("params")))
                calls.append(call)
        return calls, pre

    def _insert_call(
        self,
        shape: WriteShape,
        ev: Evaluation,
        values: Mapping[str, Any],
        current: Mapping[str, Mapping[str, Any]],
        index: int,
        idem: str,
        seen: set[str],
    ) -> _Call | None:
        given = {name: values[f"v:{name}"] for name in ev.given}
        key = given.get(shape.key)
        if isinstance(key, str) and key.startswith(PENDING_KEY_PREFIX):
            key = given[shape.key] = None  # left out: the table's placeholder default
        if ev.conflict is not None and key is not None:
            if str(key) in seen and ev.conflict == "update":
                raise Refusal(
                    CARDINALITY_VIOLATION,
                    "ON CONFLICT DO UPDATE command cannot affect row a second time",
                    hint="Ensure that no rows proposed for insertion within the same command "
                    "have duplicate constrained values.",
                )
            seen.add(str(key))
            old = current.get(str(key))
            if old is not None:  # the row existed: the trial took the DO UPDATE path
                if ev.conflict == "nothing":
                    return None
                new = {name: values[f"v:{name}"] for name in ev.sets}
                return self._update_call(shape, index, str(key), new, old, {}, idem)
        create = shape.op(Verb.CREATE)
        custom_id = create.fields is None or "id" in create.fields
        if key is not None and not custom_id:
            raise Refusal(
                NO_DATA_FOUND,
                f"no {shape.collection.name} with {shape.key} '{key}' in {shape.table} to "
                "update, and Stripe assigns the ids of new ones",
                hint=f"Leave {shape.key} out (or NULL) to create a {shape.collection.name}.",
                schema_name=self.schema,
                table_name=shape.collection.table,
                column_name=shape.key,
            )
        params, path_values = shape.create_params(given, with_key=custom_id)
        path = shape.path_for(Verb.CREATE, None, path_values)
        parent = next(iter(path_values.values()), None)
        return _Call(
            index, Verb.CREATE, create.op.verb.lower(), path, params, None, parent, idem,
            create.api_version,
        )  # fmt: skip

    def _delete_call(
        self, shape: WriteShape, index: int, key: str, parts: Mapping[str, str | None], idem: str
    ) -> _Call:
        delete = shape.op(Verb.DELETE)
        path = shape.path_for(Verb.DELETE, key, parts)
        method = delete.op.verb.lower()
        # Stripe takes idempotency keys on POSTs; a DELETE is idempotent by itself
        return _Call(
            index, Verb.DELETE, method, path, {}, key, next(iter(parts.values()), None),
            idem if method == "post" else None, delete.api_version,
        )  # fmt: skip

    def _update_call(
        self,
        shape: WriteShape,
        index: int,
        key: str,
        new: Mapping[str, Any],
        old: Mapping[str, Any],
        parts: Mapping[str, str | None],
        idempotency_key: str,
    ) -> _Call:
        update = shape.op(Verb.UPDATE)
        params = shape.update_params(new, old)
        path = shape.path_for(Verb.UPDATE, key, parts)
        parent = next(iter(parts.values()), None)
        return _Call(
            index, Verb.UPDATE, update.op.verb.lower(), path, params, key, parent,
            idempotency_key, update.api_version,
        )  # fmt: skip

    async def _call_stripe(
        self, calls: list[_Call]
    ) -> tuple[list[dict[str, Any] | None], tuple[int, StripeApiError] | None]:
        """Every call, at most ``concurrency`` at a time; none starts after a refusal."""
        results: list[dict[str, Any] | None] = [None] * len(calls)
        failures: list[tuple[int, StripeApiError]] = []
        pending = iter(range(len(calls)))

        async def worker() -> None:
            for i in pending:
                if failures:
                    return
                call = calls[i]
                try:
                    results[i] = await self._call_one(call)
                except StripeApiError as err:
                    failures.append((i, err))
                    return
                except Exception as exc:  # reported to the client like Stripe's
                    log.exception("Stripe call failed")
                    failures.append((i, StripeApiError(0, f"the Stripe call failed: {exc}")))
                    return

        if calls:
            await asyncio.gather(*(worker() for _ in range(min(len(calls), self.concurrency))))
        return results, min(failures, key=lambda f: f[0]) if failures else None

    async def _call_one(self, call: _Call) -> dict[str, Any]:
        return await self.api.request(
            call.method,
            call.path,
            call.params,
            stripe_version=call.stripe_version,
            idempotency_key=call.idempotency_key,
        )

    async def _store(
        self, shape: WriteShape, applied: list[tuple[_Call, dict[str, Any]]]
    ) -> NoticeResponse | None:
        """Write what Stripe returned, committed at once on a connection of the proxy's."""
        if not applied:
            return None
        collection = shape.collection
        table = f"{quote(self.schema)}.{quote(collection.table)}"
        key = quote(collection.key)
        try:
            async with self.pool.connection() as conn, conn.transaction():
                ms = int(self.store_lock_timeout * 1000)
                await conn.execute(f"SET LOCAL lock_timeout = {ms}")  # type: ignore[arg-type]
                ids = [str(obj.get(collection.key)) for _, obj in applied]
                cur = await conn.execute(
                    f"SELECT {key}, extract(epoch FROM _stripe_time)::float8 "  # type: ignore[arg-type]
                    f"FROM {table} WHERE {key} = ANY(%s)",
                    (ids,),
                )
                existing = {str(k): float(t) for k, t in await cur.fetchall()}
                # the child tables this database has (a run may sync only some collections)
                kids = await self.store.present(conn, self.catalog.children_of(collection.name))
                assert self.api is not None  # a write was applied, so there is an API
                now = fetch_time(self.api.clock.now())
                upserts: list[Incoming] = []
                deletes: list[str] = []
                children: dict[str, list[Incoming]] = {}
                for call, obj in applied:
                    oid = str(obj.get(collection.key))
                    # not older than the row's copy: the write's result wins (a tie
                    # goes to the later copy), so the next query reads it
                    when = max(now, existing.get(oid, 0.0))
                    if obj.get("deleted") is True:
                        deletes.append(oid)
                        continue
                    parent = call.parent_id or parent_id(collection, obj)
                    upserts.append(Incoming(obj, stripe_time=when, parent_id=parent))
                    for child in kids:
                        embedded = embedded_children(obj, child) or []
                        for item in embedded:
                            children.setdefault(child.name, []).append(
                                Incoming(item, stripe_time=now, parent_id=oid)
                            )
                if upserts:
                    await self.store.upsert(conn, collection, upserts)
                for name, items in children.items():
                    await self.store.upsert(conn, self.catalog[name], items)
                if deletes:
                    when = max([self.api.clock.now(), *(existing.get(d, 0.0) for d in deletes)])
                    await self.store.delete(
                        conn,
                        collection,
                        deletes,
                        deleted_at=when,
                        children=kids,
                    )
        except Exception as exc:  # Stripe changed it: the sync brings it
            log.warning("could not store %d %s written at Stripe: %s", len(applied),
                        collection.name, exc)  # fmt: skip
            return NoticeResponse.create(
                WARNING,
                f"Stripe applied the write, but the copy in {self.schema}.{collection.table} "
                f"could not be stored now: {exc}",
                severity="WARNING",
                detail="The live sync brings the change from Stripe's events.",
            )
        return None


# ---- helpers -------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _cached_analysis(sql: str, tables: frozenset[str], schema: str) -> Analysis | None:
    return analyze(sql, tables, schema)


def _json(value: bytes | None) -> Any:
    return None if value is None else orjson.loads(value)


def _decode(
    ev: Evaluation, rows: list[DataRow]
) -> tuple[list[dict[str, Any]], list[tuple[bytes | None, ...]]]:
    """Each row's slots, decoded, and the client's RETURNING values that follow them."""
    n = len(ev.slots)
    decoded = [
        {slot: _json(v) for slot, v in zip(ev.slots, row.values[:n], strict=True)}
        for row in rows
    ]
    return decoded, [row.values[n:] for row in rows]


def _utility(sql: str) -> list[FrontendMessage]:
    """A statement without parameters or rows, on the handler's own statement name."""
    return _statement(sql, (), (), (), (0,))


def _statement(
    sql: str,
    types: tuple[int, ...],
    formats: tuple[int, ...],
    values: tuple[bytes | None, ...],
    result_formats: tuple[int, ...],
) -> list[FrontendMessage]:
    return [
        Close("S", _STMT),
        Close("P", _STMT),
        Parse(_STMT, sql, types),
        Bind(_STMT, _STMT, formats, values, result_formats),
        Execute(_STMT, 0),
        Close("P", _STMT),
        Close("S", _STMT),
    ]


def _extra_params(setting: Any) -> dict[str, Any]:
    """The session's ``stripesync.params``: a JSON object of extra Stripe parameters."""
    if not setting:
        return {}
    try:
        extra = orjson.loads(setting)
    except orjson.JSONDecodeError:
        extra = None
    if not isinstance(extra, dict):
        raise Refusal(
            INVALID_PARAMETER_VALUE,
            f"{PARAMS_SETTING} must be a JSON object of Stripe parameters",
            detail=f"It is {setting!r}.",
            hint=f"""SET {PARAMS_SETTING} = '{{"payment_method": "pm_..."}}'""",
        )
    return extra


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _text_array(items: Sequence[str]) -> bytes:
    quoted = ('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"' for i in items)
    return ("{" + ",".join(quoted) + "}").encode()


def _expand(formats: tuple[int, ...], n: int) -> tuple[int, ...]:
    """A Bind's result formats for ``n`` columns, one each."""
    if not formats:
        return (0,) * n
    if len(formats) == 1:
        return formats * n
    return formats


def _parts(values: Mapping[str, Any]) -> dict[str, str | None]:
    return {
        slot[len("path:") :]: (str(v) if v is not None else None)
        for slot, v in values.items()
        if slot.startswith("path:")
    }


def _object_key(shape: WriteShape, call: _Call, obj: Mapping[str, Any]) -> str | None:
    value = obj.get(shape.key, call.key)
    return None if value is None else str(value)


def _keeps_row(shape: WriteShape, kind: WriteKind) -> bool:
    """A DELETE whose call keeps the object (a subscription's cancel)."""
    delete = shape.delete
    return kind is WriteKind.DELETE and delete is not None and delete.op.method != "delete"


def _after_stripe(error: ErrorResponse) -> ErrorResponse:
    """PostgreSQL's error for RETURNING, which failed after Stripe made the change."""
    fields = list(error.fields)
    note = "The change was made at Stripe and is stored; only RETURNING failed."
    detail = error.detail
    fields = [(k, v) for k, v in fields if k != "D"]
    fields.append(("D", f"{detail} {note}" if detail else note))
    return ErrorResponse(tuple(fields))
