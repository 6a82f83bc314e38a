"""`stripesync doctor`: what the API key may read and write, and whether the database is
ready for stripesync (and for the proxy's clients); says what to fix.

The Stripe checks never change the account:

- **Read**: one cheap request per read of each collection: `GET <list>?limit=1`, the
  singleton, or a retrieve with a made-up id. A nested list is probed under a real
  parent when the parent's probe returned one, otherwise under a made-up id. 2xx means
  readable; 403 means the key lacks the permission; `resource_missing` (404 or 400 on a
  made-up id) means Stripe let the request through its permission check, so the key may
  read; any other 404 means the endpoint is not available to this account or API version
  (a product not enabled, a legacy endpoint gone); any other 400 is Stripe refusing the
  collection (it would be skipped, with that reason).
- **Write** (restricted keys only: a secret key may write everything): a `POST` to the
  collection's create (or update) path, with made-up ids in the path and a single
  unknown parameter, `stripesync_doctor_probe`. Stripe checks a restricted key's
  permission before it reads the parameters: a key without write permission gets 403
  (`permission_error`, naming the `rak_…_write` permission it lacks), a key with it gets
  400 (`parameter_unknown`) or 404 (`resource_missing` for the made-up id), and nothing
  is created, since Stripe refuses a request with an unknown parameter as a whole.
  Deletes are never probed.

What is needed mirrors the seed's recommended restricted key: Read on every synced
collection; Write on webhook endpoints (for `stripesync run --register-webhook`; off
with `--no-webhooks`); Write on the collections the proxy writes to when
`--proxy-writes` says the proxy will write to Stripe.

The database checks use only the catalogs (no pg_hba, no superuser): the server
version, the role's privileges on the database, the schema and its tables (migrations
create tables and add columns; the store uses temporary tables), connection headroom,
and the proxy's role setup: the proxy relays each client's own login, so a client role
needs USAGE on the schema and SELECT on its tables (and default privileges for the
tables later migrations add), and a role that can write synced tables directly bypasses
Stripe.

Exit codes: 0 all good (advice may be printed), 3 something should be fixed, 1 the key
or the database cannot be reached (one line), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from rich.console import Console
from rich.table import Table
from rich.text import Text

from stripesync.app import (
    EXIT_OK,
    UserError,
    add_database_options,
    add_stripe_options,
    collections_option,
    connect_pool,
    open_database,
    run_command,
)
from stripesync.catalog import Catalog, Collection, Read, ReadKind, build_catalog
from stripesync.schema.columns import quote
from stripesync.schema.ddl import SCHEMA_VERSION
from stripesync.schema.guard import GUARD_TRIGGER
from stripesync.stripe_api.client import StripeApi, StripeApiError, key_mode, redact
from stripesync.stripe_api.clock import WARN_OFFSET_S
from stripesync.sync.paging import supported

EXIT_FIX = 3
PROBE_ID = "stripesync_doctor_probe"  # made-up ids in paths, and the unknown parameter
PROBE_PARAM = "stripesync_doctor_probe"
CONCURRENCY = 8
MIN_TESTED_VERSION = 140000  # PostgreSQL 14
RUN_POOL = 20  # connections `stripesync run` may open

# outcomes of a probe
YES, NO, UNAVAILABLE, REFUSED, ERROR, NA = "yes", "no", "unavailable", "refused", "error", "n/a"
# statuses of a finding
OK, WARN, FIX = "ok", "warn", "fix"


# ---- the report -----------------------------------------------------------------------------


@dataclass
class Finding:
    """One check: `status` ok / warn (advice, exit 0) / fix (exit 3)."""

    area: str  # key, collection, database, proxy
    subject: str
    status: str
    detail: str
    fix: str | None = None


@dataclass
class Access:
    """What the key may do with one collection."""

    collection: str
    read: str = NA  # yes / no / unavailable / refused / error / n/a
    read_detail: str = ""
    write: str = NA
    write_detail: str = ""
    needs_read: bool = True
    needs_write: bool = False
    status: str = OK


@dataclass
class Report:
    key: dict[str, Any] = field(default_factory=dict)
    collections: list[Access] = field(default_factory=list)
    database: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def fixes(self) -> list[Finding]:
        return [f for f in self.findings if f.status == FIX]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.status == WARN]

    @property
    def exit_code(self) -> int:
        return EXIT_FIX if self.fixes else EXIT_OK

    def summary(self) -> str:
        fixes, warns = len(self.fixes), len(self.warnings)
        if not fixes and not warns:
            head = "all good"
        elif not fixes:
            head = f"all good, {warns} piece{'s' if warns != 1 else ''} of advice"
        else:
            head = (
                f"{fixes} thing{'s' if fixes != 1 else ''} to fix"
                + (f", {warns} piece{'s' if warns != 1 else ''} of advice" if warns else "")
            )
        readable = sum(1 for a in self.collections if a.read == YES)
        bits = [head]
        if self.key:
            bits.append(
                f"{self.key['mode']} {self.key['kind']} key reads {readable} of "
                f"{len(self.collections)} collections"
            )
        if self.database.get("version"):
            bits.append(f"PostgreSQL {self.database['version']}")
        return "doctor: " + "; ".join(bits)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": not self.fixes,
            "exit_code": self.exit_code,
            "summary": self.summary(),
            "key": self.key,
            "collections": [asdict(a) for a in self.collections],
            "database": self.database,
            "findings": [asdict(f) for f in self.findings],
        }


# ---- command line ---------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "doctor",
        help="check the API key's permissions and the database, and say what to fix",
        description="Probe what the Stripe key may read and write in every catalog "
        "collection (without changing anything), and check the database and the proxy's "
        "roles. Exit 0: all good; 3: something to fix; 1: the key or the database cannot "
        "be reached.",
    )
    add_stripe_options(p)
    add_database_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--no-webhooks",
        action="store_true",
        help="stripesync will not register its webhook endpoint: Write on webhook "
        "endpoints is not needed",
    )
    p.add_argument(
        "--proxy-writes",
        action="store_true",
        help="the proxy will write to Stripe: Write is needed on every writable collection",
    )
    p.set_defaults(run=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    return run_command(_doctor(args))


async def _doctor(args: argparse.Namespace) -> int:
    names = collections_option(args.collections)
    catalog = build_catalog()
    selected = catalog.select(names)
    report = Report()
    db = open_database(args.database_url, data_dir=args.data_dir, announce=False)
    async with connect_pool(db.url, max_size=2) as pool:
        await check_database(pool, args.schema, report, catalog)
    if not args.api_key:
        report.findings.insert(
            0,
            Finding("key", "API key", FIX, "no Stripe API key given",
                    "pass --api-key or set STRIPE_API_KEY"),
        )
    else:
        async with StripeApi(args.api_key, api_base=args.api_base, max_rps=args.max_rps) as api:
            await check_key(
                api,
                args.api_key,
                selected,
                report,
                catalog=catalog,
                webhooks=not args.no_webhooks,
                proxy_writes=args.proxy_writes,
            )
    if args.json:
        print(json.dumps(report.as_json(), indent=2, default=str))
    else:
        print_report(report)
    return report.exit_code


# ---- Stripe ---------------------------------------------------------------------------------


class _Unreachable(Exception):
    pass


@dataclass
class _Probe:
    outcome: str
    detail: str = ""
    first_id: str | None = None


def mask(api_key: str) -> str:
    """`sk_test_…`: the key's kind and mode, nothing of the secret."""
    m = re.match(r"^([a-z]+_(?:live|test)_)", api_key)
    return (m.group(1) if m else api_key[:3]) + "…"


def key_kind(api_key: str) -> str:
    if api_key.startswith("sk_"):
        return "secret"
    if api_key.startswith("rk_"):
        return "restricted"
    return "unknown"


async def check_key(
    api: StripeApi,
    api_key: str,
    collections: list[Collection],
    report: Report,
    *,
    catalog: Catalog | None = None,
    webhooks: bool = True,
    proxy_writes: bool = False,
) -> None:
    """Probe every collection's reads (and, for restricted keys, writes) into `report`.
    Raises UserError when Stripe refuses the key or cannot be reached."""
    catalog = catalog or build_catalog()
    kind, mode = key_kind(api_key), key_mode(api_key)
    if kind == "unknown":
        raise UserError(
            f"{mask(api_key)!r} is not a secret (sk_…) or restricted (rk_…) Stripe key"
        )
    report.key = {"mode": mode, "kind": kind, "key": mask(api_key), "api_base": api.api_base}
    prober = _Prober(api, catalog)
    retries, api.max_retries = api.max_retries, 2  # a dead address is not worth a minute
    try:
        await prober.first_contact()
        wanted = {c.name for c in collections}
        extra = [catalog["webhook_endpoint"]] if webhooks and "webhook_endpoint" in catalog else []
        checked = list(collections) + [c for c in extra if c.name not in wanted]
        reads = await _all_or_none([prober.read(c) for c in checked])
        writes: list[_Probe | None] = [None] * len(checked)
        if kind == "restricted":
            writes = list(await _all_or_none([prober.write(c) for c in checked]))
    except _Unreachable as e:
        raise UserError(str(e)) from None
    finally:
        prober.cancel()
        api.max_retries = retries

    report.key["mode_note"] = (
        "live mode: the real account" if mode == "live" else "test mode: the sandbox's data"
    )
    report.findings.append(
        Finding("key", "mode", OK, f"{mode} mode {kind} key ({mask(api_key)})")
    )
    _check_clock(api, report)
    if kind == "secret":
        report.findings.append(
            Finding(
                "key",
                "kind",
                WARN,
                "a secret key may read and write everything in the account",
                "the seed recommends a restricted key: Read on every resource, Write on "
                "webhook resources (plus Write on what the proxy writes, if it does)",
            )
        )
    needless: list[str] = []
    for c, r, w in zip(checked, reads, writes, strict=True):
        in_selection = c.name in wanted
        a = Access(c.name, read=r.outcome, read_detail=r.detail, needs_read=in_selection)
        if c.read.kind is ReadKind.WRITE_ONLY:
            a.needs_read = False
        if not c.writable:
            a.write, a.write_detail = NA, "Stripe has no write for it"
        elif kind == "secret":
            a.write, a.write_detail = YES, "secret key"
        elif w is not None:
            a.write, a.write_detail = w.outcome, w.detail
        a.needs_write = c.writable and (
            (webhooks and c.name == "webhook_endpoint") or (proxy_writes and in_selection)
        )
        if not in_selection:
            a.needs_read = False
        _judge(a, report)
        if kind == "restricted" and a.write == YES and not a.needs_write:
            needless.append(c.name)
        report.collections.append(a)
    if needless:
        report.findings.append(
            Finding(
                "key",
                "least privilege",
                WARN,
                f"the key may write {len(needless)} collection(s) stripesync does not "
                f"write: {_some(needless)}",
                "set them to Read in the restricted key (unless the proxy will write them: "
                "--proxy-writes)",
            )
        )


def _check_clock(api: StripeApi, report: Report) -> None:
    """How far this machine's clock is from Stripe's (read from the probes' answers)."""
    clock = api.clock
    if not clock.known:
        return
    offset = clock.offset
    report.key["clock_offset_seconds"] = round(offset, 3)
    if abs(offset) <= WARN_OFFSET_S:
        low, high = clock.bounds
        within = max(abs(low), abs(high))
        report.findings.append(
            Finding("key", "clock", OK, f"this machine's clock is within {within:.1f} s of "
                    "Stripe's")
        )
        return
    where = "behind" if offset > 0 else "ahead of"
    report.findings.append(
        Finding(
            "key",
            "clock",
            WARN,
            f"this machine's clock is {abs(offset):.1f} s {where} Stripe's",
            "synchronise it (NTP): stripesync dates copies by Stripe's clock, so nothing is "
            "lost, but logs, the status page and other programs use this machine's",
        )
    )


async def _all_or_none(aws: list[Any]) -> list[Any]:
    """Every result, or the first error with the other probes cancelled."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _judge(a: Access, report: Report) -> None:
    """Set `a.status` and add the findings it calls for."""
    status = OK
    if a.needs_read and a.read == NO:
        status = FIX
        report.findings.append(
            Finding("collection", a.collection, FIX, f"cannot read: {a.read_detail}",
                    f"grant Read on {a.collection}{_perm_hint(a.read_detail)}")
        )
    elif a.needs_read and a.read in (UNAVAILABLE, REFUSED, ERROR):
        status = WARN
        report.findings.append(
            Finding(
                "collection",
                a.collection,
                WARN,
                f"{a.read}: {a.read_detail}",
                "nothing to change in the key: the backfill skips it and says why"
                if a.read != ERROR
                else "run the doctor again",
            )
        )
    if a.needs_write and a.write in (NO, UNAVAILABLE, ERROR):
        status = FIX if a.write == NO else max(status, WARN, key=_rank)
        why = "--register-webhook" if a.collection == "webhook_endpoint" else "the proxy"
        report.findings.append(
            Finding(
                "collection",
                a.collection,
                FIX if a.write == NO else WARN,
                f"cannot write ({why} needs it): {a.write_detail}",
                f"grant Write on {a.collection}{_perm_hint(a.write_detail)}"
                if a.write == NO
                else None,
            )
        )
    a.status = status


def _rank(status: str) -> int:
    return {OK: 0, WARN: 1, FIX: 2}[status]


def _perm_hint(detail: str) -> str:
    m = re.search(r"\((rak_[a-z0-9_]+)\)", detail)
    return f" ({m.group(1)})" if m else ""


def _some(names: list[str], n: int = 6) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


class _Prober:
    """Probes with memoised results: a nested collection waits for its parent's probe
    and uses the id it found."""

    def __init__(self, api: StripeApi, catalog: Catalog) -> None:
        self.api = api
        self.catalog = catalog
        self.sem = asyncio.Semaphore(CONCURRENCY)
        self._reads: dict[str, asyncio.Task[_Probe]] = {}

    def cancel(self) -> None:
        for task in self._reads.values():
            task.cancel()

    async def first_contact(self) -> None:
        """One request first: a refused key or a dead address ends the doctor at once."""
        with contextlib.suppress(StripeApiError):  # a refusal: the event probe says so
            await self._get("/v1/events", {"limit": 1}, None)

    # ---- reads ---------------------------------------------------------------------------

    def read(self, c: Collection) -> asyncio.Task[_Probe]:
        task = self._reads.get(c.name)
        if task is None:
            task = asyncio.ensure_future(self._read_collection(c))
            self._reads[c.name] = task
        return task

    async def _read_collection(self, c: Collection) -> _Probe:
        kind = c.read.kind
        if kind is ReadKind.WRITE_ONLY:
            return _Probe(NA, "no read endpoint: rows come from the proxy's writes")
        if kind is ReadKind.EVENTS:
            via = await self.read(self.catalog["event"])
            return _Probe(via.outcome, f"from events ({via.detail or 'event: ' + via.outcome})")
        if kind is ReadKind.REFERENCE and not c.read.retrieve:
            ref = c.read.references[0].collection if c.read.references else "event"
            via = await self.read(self.catalog[ref])
            return _Probe(via.outcome, f"through {ref} ({via.detail or via.outcome})")
        results = [await self._read_one(c, r) for r in c.reads]
        worst = max(results, key=lambda p: _READ_RANK[p.outcome])
        first = next((p.first_id for p in results if p.first_id), None)
        return _Probe(worst.outcome, worst.detail, first)

    async def _read_one(self, c: Collection, read: Read) -> _Probe:
        made_up = False
        params: dict[str, Any] = {}
        if read.kind is ReadKind.SINGLETON:
            path = read.path or ""
        elif read.kind is ReadKind.REFERENCE or (read.path is None and read.retrieve):
            path, made_up = _fill(read.retrieve or "", PROBE_ID), True
        else:
            path = read.path or ""
            params = dict(read.params)
            if read.kind is not ReadKind.UPCOMING:
                params["limit"] = 1
            if read.parent:
                parent_id = None
                if read.parent in self.catalog:
                    parent_id = (await self.read(self.catalog[read.parent])).first_id
                made_up = parent_id is None
                pid = parent_id or PROBE_ID
                token = "{" + str(read.parent_param) + "}"
                if token in path:
                    path = path.replace(token, pid)
                else:
                    params[str(read.parent_param)] = pid
            path = _fill(path, PROBE_ID)
            params = supported(read, params)  # as the backfill asks
        try:
            body = await self._get(path, params, read.api_version)
        except StripeApiError as e:
            return _classify_read(e, made_up)
        first = None
        data = body.get("data") if body.get("object") == "list" else None
        if isinstance(data, list) and data and isinstance(data[0], dict):
            first = data[0].get("id")
        return _Probe(YES, "", str(first) if first else None)

    async def _get(self, path: str, params: dict[str, Any], version: str | None) -> dict[str, Any]:
        async with self.sem:
            try:
                return await self.api.get(path, params, stripe_version=version)
            except StripeApiError as e:
                _fatal(e, self.api)
                raise

    # ---- writes --------------------------------------------------------------------------

    async def write(self, c: Collection) -> _Probe | None:
        op = c.writes.create or c.writes.update
        if op is None or op.verb.upper() != "POST":
            return None
        path = _fill(op.path, PROBE_ID)
        async with self.sem:
            try:
                await self.api.post(
                    path, {PROBE_PARAM: "1"}, stripe_version=c.read.api_version
                )
            except StripeApiError as e:
                _fatal(e, self.api)
                return _classify_write(e)
        # Stripe refuses unknown parameters: an accepted probe should never happen
        return _Probe(YES, f"POST {op.path} was accepted: check the account")


# codes of "no such object" answers: the request got through the permission check
_NOTHING_THERE = ("resource_missing", "invoice_upcoming_none")
_READ_RANK = {YES: 0, NA: 0, ERROR: 1, UNAVAILABLE: 2, REFUSED: 3, NO: 4}
_BRACES = re.compile(r"\{[^}]+\}")


def _fill(path: str, value: str) -> str:
    return _BRACES.sub(value, path)


def _fatal(e: StripeApiError, api: StripeApi) -> None:
    if e.authentication:
        raise _Unreachable(f"Stripe refused the API key: {e.message}")
    if e.status == 0:
        raise _Unreachable(f"cannot reach the Stripe API at {api.api_base}: {e.message}")


def _denied(e: StripeApiError) -> str:
    """Stripe's 403 names the permission that would allow the request: keep just that."""
    m = re.search(r"'(rak_[a-z0-9_]+)'", e.message)
    return f"permission denied ({m.group(1)})" if m else f"permission denied: {e.message}"


def _classify_read(e: StripeApiError, made_up: bool) -> _Probe:
    if e.status == 403:
        return _Probe(NO, _denied(e))
    if e.code in _NOTHING_THERE and e.status in (400, 404):
        # through the permission check; the (made-up) object simply does not exist
        return _Probe(YES, "allowed (nothing of it to read yet)" if made_up else "")
    if e.status == 404:
        return _Probe(UNAVAILABLE, f"not available: {e.message}")
    if e.status == 400:
        return _Probe(REFUSED, f"refused by Stripe: {e.message}")
    return _Probe(ERROR, f"HTTP {e.status}: {e.message}")


def _classify_write(e: StripeApiError) -> _Probe:
    if e.status == 403:
        return _Probe(NO, _denied(e))
    if e.status == 400 or (e.status == 404 and e.code == "resource_missing"):
        return _Probe(YES, "")
    if e.status == 404:
        return _Probe(UNAVAILABLE, f"not available: {e.message}")
    return _Probe(ERROR, f"HTTP {e.status}: {e.message}")


# ---- the database ---------------------------------------------------------------------------


async def check_database(
    pool: AsyncConnectionPool,  # type: ignore[type-arg]
    schema: str,
    report: Report,
    catalog: Catalog | None = None,
) -> None:
    """The server, the role's privileges, the schema, and the proxy's role setup."""
    catalog = catalog or build_catalog()
    add = report.findings.append
    async with pool.connection() as conn:
        one = await _one(
            conn,
            "SELECT current_setting('server_version_num')::int, "
            "current_setting('server_version'), current_user, current_database(), "
            "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user), "
            "has_database_privilege(current_database(), 'CREATE'), "
            "has_database_privilege(current_database(), 'TEMPORARY'), "
            "current_setting('max_connections')::int, "
            "(SELECT count(*) FROM pg_stat_activity), "
            "(SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user), "
            "current_setting('ssl')",
        )
        num, version, user, dbname, superuser, can_create, can_temp = one[:7]
        max_conn, used, connlimit, ssl = one[7:]
        info = conn.info
        report.database = {
            "version": str(version).split()[0],
            "version_num": num,
            "role": user,
            "database": dbname,
            "host": info.host,
            "port": info.port,
            "superuser": superuser,
            "schema": schema,
        }
        where = f"{info.host}:{info.port}/{dbname} as {user}"
        if num >= MIN_TESTED_VERSION:
            add(Finding("database", "server", OK, f"PostgreSQL {version} ({where})"))
        else:
            add(
                Finding(
                    "database",
                    "server",
                    WARN,
                    f"PostgreSQL {version}: older than stripesync is tested with ({where})",
                    "upgrade to PostgreSQL 14 or newer",
                )
            )
        if superuser:
            add(
                Finding(
                    "database",
                    "role",
                    WARN,
                    f"{user} is a superuser",
                    f"a role that owns schema {schema} is enough: CREATE ROLE stripesync "
                    f"LOGIN; CREATE SCHEMA {quote(schema)} AUTHORIZATION stripesync",
                )
            )
        else:
            add(Finding("database", "role", OK, f"{user} (not a superuser)"))
        if not can_temp:
            add(
                Finding(
                    "database",
                    "temporary tables",
                    FIX,
                    f"{user} cannot create temporary tables (the store stages each batch "
                    "in one)",
                    f"GRANT TEMPORARY ON DATABASE {quote(dbname)} TO {quote(user)}",
                )
            )
        free = max_conn - used
        limit = connlimit if connlimit >= 0 else None
        if free < RUN_POOL + 2 or (limit is not None and limit < RUN_POOL + 2):
            add(
                Finding(
                    "database",
                    "connections",
                    WARN,
                    f"{free} of max_connections {max_conn} free"
                    + (f", {user} limited to {limit}" if limit is not None else "")
                    + f"; stripesync run opens up to {RUN_POOL}",
                    "raise max_connections (or the role's CONNECTION LIMIT)",
                )
            )
        else:
            add(
                Finding(
                    "database", "connections", OK, f"{free} of max_connections {max_conn} free"
                )
            )
        owner, usage, create = await _one(
            conn,
            "SELECT pg_get_userbyid(nspowner), has_schema_privilege(oid, 'USAGE'), "
            "has_schema_privilege(oid, 'CREATE') FROM pg_namespace WHERE nspname = %s",
            (schema,),
            default=(None, False, False),
        )
        report.database["schema_exists"] = owner is not None
        if owner is None:
            if can_create:
                add(Finding("database", "schema", OK,
                            f"schema {schema} does not exist yet: the first run creates it"))
            else:
                add(
                    Finding(
                        "database",
                        "schema",
                        FIX,
                        f"schema {schema} does not exist and {user} cannot create it",
                        f"CREATE SCHEMA {quote(schema)} AUTHORIZATION {quote(user)} (as an "
                        f"admin), or GRANT CREATE ON DATABASE {quote(dbname)} TO {quote(user)}",
                    )
                )
            ssl_note = ssl == "on"
            _proxy_tls_note(report, ssl_note)
            return
        if not (usage and create):
            add(
                Finding(
                    "database",
                    "schema",
                    FIX,
                    f"{user} lacks {'USAGE' if not usage else ''}"
                    f"{' and ' if not usage and not create else ''}"
                    f"{'CREATE' if not create else ''} on schema {schema} (owner {owner}); "
                    "migrations create its tables",
                    f"GRANT USAGE, CREATE ON SCHEMA {quote(schema)} TO {quote(user)}",
                )
            )
        else:
            add(Finding("database", "schema", OK, f"schema {schema} (owner {owner})"))
        if not can_create:
            add(
                Finding(
                    "database",
                    "migrations",
                    FIX,
                    f"{user} lacks CREATE on database {dbname}: every start migrates with "
                    "CREATE SCHEMA IF NOT EXISTS, which PostgreSQL refuses without it even "
                    "when the schema exists",
                    f"GRANT CREATE ON DATABASE {quote(dbname)} TO {quote(user)}",
                )
            )
        tables = await _all(
            conn,
            "SELECT c.relname, pg_get_userbyid(c.relowner), "
            "(has_table_privilege(c.oid, 'SELECT') AND has_table_privilege(c.oid, 'INSERT') "
            "AND has_table_privilege(c.oid, 'UPDATE') "
            "AND has_table_privilege(c.oid, 'DELETE')) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
            (schema,),
        )
        report.database["tables"] = len(tables)
        if not superuser:
            foreign = sorted(t for t, o, _ in tables if o != user)
            if foreign:
                add(
                    Finding(
                        "database",
                        "tables",
                        FIX,
                        f"{len(foreign)} table(s) of {schema} are not owned by {user} "
                        f"({_some(foreign)}); migrations add columns to them",
                        f"ALTER TABLE {quote(schema)}.<table> OWNER TO {quote(user)} for each "
                        "(or run stripesync as their owner)",
                    )
                )
        lacking = sorted(t for t, _, ok in tables if not ok)
        if lacking:
            add(
                Finding(
                    "database",
                    "tables",
                    FIX,
                    f"{user} cannot read and write {_some(lacking)}",
                    f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "
                    f"{quote(schema)} TO {quote(user)}",
                )
            )
        elif tables and (superuser or all(o == user for _, o, _ in tables)):
            add(Finding("database", "tables", OK, f"{len(tables)} tables, owned by {user}"))
        migrated = await _one(
            conn,
            f"SELECT value FROM {quote(schema)}._meta WHERE key = 'schema_version'"
            if any(t == "_meta" for t, _, _ in tables)
            else "SELECT NULL",
            default=(None,),
        )
        report.database["schema_version"] = migrated[0]
        if migrated[0] is not None and int(migrated[0]) > SCHEMA_VERSION:
            add(
                Finding(
                    "database",
                    "schema version",
                    FIX,
                    f"schema {schema} was migrated by a newer stripesync (version "
                    f"{migrated[0]}, this one knows {SCHEMA_VERSION})",
                    "upgrade stripesync",
                )
            )
        await _check_proxy_roles(conn, schema, str(owner), str(user), catalog, report)
        _proxy_tls_note(report, ssl == "on")


async def _check_proxy_roles(
    conn: psycopg.AsyncConnection[Any],
    schema: str,
    owner: str,
    user: str,
    catalog: Catalog,
    report: Report,
) -> None:
    """The proxy relays each client's own login: clients need USAGE and SELECT (and
    INSERT, UPDATE, DELETE to write through the proxy). Their direct writes never
    commit (the schema's guard), unless they hold TRUNCATE, which the guard trusts."""
    add = report.findings.append
    synced = {c.table for c in catalog}
    rows = await _all(
        conn,
        "SELECT r.rolname, has_schema_privilege(r.oid, n.oid, 'USAGE'), "
        "count(c.oid) FILTER (WHERE has_table_privilege(r.oid, c.oid, 'SELECT')), "
        "count(c.oid), "
        "array_remove(array_agg(c.relname ORDER BY c.relname) FILTER (WHERE "
        "has_table_privilege(r.oid, c.oid, 'TRUNCATE')), NULL) "
        "FROM pg_roles r CROSS JOIN pg_namespace n "
        "LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p') "
        "AND left(c.relname, 1) <> '_' "
        "WHERE n.nspname = %s AND r.rolcanlogin AND NOT r.rolsuper "
        "AND r.rolname NOT IN (%s, %s) AND r.rolname NOT LIKE 'pg\\_%%' "
        "GROUP BY r.rolname, r.oid, n.oid ORDER BY r.rolname",
        (schema, owner, user),
    )
    clients = [(name, sel, total) for name, usage, sel, total, _ in rows if usage and sel]
    writers = {
        name: [t for t in (w or []) if t in synced] for name, usage, _, _, w in rows if usage
    }
    writers = {k: v for k, v in writers.items() if v}
    report.database["proxy_client_roles"] = [name for name, _, _ in clients]
    if not clients:
        add(
            Finding(
                "proxy",
                "client roles",
                WARN,
                f"no login role besides {user} can read schema {schema}: proxy clients log "
                "in with their own role",
                f"CREATE ROLE app LOGIN PASSWORD '…'; GRANT USAGE ON SCHEMA {quote(schema)} "
                f"TO app; GRANT SELECT ON ALL TABLES IN SCHEMA {quote(schema)} TO app; "
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {quote(owner)} IN SCHEMA {quote(schema)} "
                "GRANT SELECT ON TABLES TO app",
            )
        )
    else:
        partial = [f"{n} ({s} of {t})" for n, s, t in clients if s < t]
        add(
            Finding(
                "proxy",
                "client roles",
                WARN if partial else OK,
                f"roles that can read {schema} through the proxy: "
                + _some([n for n, _, _ in clients])
                + (f"; some tables not readable by {_some(partial)}" if partial else ""),
                f"GRANT SELECT ON ALL TABLES IN SCHEMA {quote(schema)} TO <role>"
                if partial
                else None,
            )
        )
        defaults = await _all(
            conn,
            "SELECT a.grantee::regrole::text FROM pg_default_acl d "
            "JOIN pg_namespace n ON n.oid = d.defaclnamespace "
            "CROSS JOIN LATERAL aclexplode(d.defaclacl) a "
            "WHERE n.nspname = %s AND d.defaclobjtype = 'r' "
            "AND d.defaclrole = %s::regrole AND a.privilege_type = 'SELECT'",
            (schema, owner),
        )
        covered = {str(r[0]).strip('"') for r in defaults}
        missing = [n for n, _, _ in clients if n not in covered]
        if missing:
            add(
                Finding(
                    "proxy",
                    "default privileges",
                    WARN,
                    f"tables later migrations add will not be readable by {_some(missing)}",
                    f"ALTER DEFAULT PRIVILEGES FOR ROLE {quote(owner)} IN SCHEMA "
                    f"{quote(schema)} GRANT SELECT ON TABLES TO <role>",
                )
            )
    for name, tables in sorted(writers.items()):
        add(
            Finding(
                "proxy",
                f"role {name}",
                WARN,
                f"{name} holds TRUNCATE on {len(tables)} synced table(s) ({_some(tables)}): "
                "the guard trusts it, so its direct writes bypass Stripe (and the sync "
                "overwrites them)",
                f"REVOKE TRUNCATE ON ALL TABLES IN SCHEMA {quote(schema)} FROM {quote(name)}",
            )
        )
    unguarded = await _all(
        conn,
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT EXISTS ("
        "SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = %s) "
        "ORDER BY c.relname",
        (schema, GUARD_TRIGGER),
    )
    bare = [str(r[0]) for r in unguarded if str(r[0]) in synced]
    if bare:
        add(
            Finding(
                "proxy",
                "guard",
                WARN,
                f"{len(bare)} synced table(s) lack the guard that keeps direct writes from "
                f"committing ({_some(bare)})",
                "run stripesync run or backfill once: migrations add it",
            )
        )


def _proxy_tls_note(report: Report, ssl_on: bool) -> None:
    if ssl_on:
        report.findings.append(
            Finding(
                "proxy",
                "TLS",
                OK,
                "the server offers TLS: with TLS on both legs of the proxy, clients need "
                "channel_binding=disable (SCRAM channel binding cannot cross a proxy)",
            )
        )


async def _one(
    conn: psycopg.AsyncConnection[Any],
    query: str,
    params: Iterable[Any] | None = None,
    *,
    default: tuple[Any, ...] | None = None,
) -> tuple[Any, ...]:
    cur = await conn.execute(query, tuple(params) if params is not None else None)  # type: ignore[arg-type]
    row = await cur.fetchone()
    if row is None:
        if default is None:
            raise UserError("the database returned nothing")
        return default
    return tuple(row)


async def _all(
    conn: psycopg.AsyncConnection[Any], query: str, params: Iterable[Any] | None = None
) -> list[tuple[Any, ...]]:
    cur = await conn.execute(query, tuple(params) if params is not None else None)  # type: ignore[arg-type]
    return [tuple(r) for r in await cur.fetchall()]


# ---- output ---------------------------------------------------------------------------------

_STYLE = {YES: "green", NO: "bold red", UNAVAILABLE: "yellow", REFUSED: "yellow",
          ERROR: "red", NA: "dim"}
_STATUS = {OK: ("ok", "green"), WARN: ("advice", "yellow"), FIX: ("FIX", "bold red")}


def print_report(report: Report, console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    if report.collections:
        key = report.key
        table = Table(
            title=f"Stripe: {key['mode']} mode {key['kind']} key ({key['key']})",
            title_justify="left",
        )
        for col in ("collection", "read", "write", "needs", "note"):
            table.add_column(col, overflow="fold")
        for a in report.collections:
            needs = "/".join(
                x for x, on in (("read", a.needs_read), ("write", a.needs_write)) if on
            )
            notes = []
            if a.read_detail:
                notes.append(f"read: {a.read_detail}" if a.read != YES else a.read_detail)
            if a.write_detail and a.write in (NO, UNAVAILABLE, ERROR):
                notes.append(f"write: {a.write_detail}")
            note = "; ".join(notes)
            table.add_row(
                Text(a.collection, style="bold red" if a.status == FIX else ""),
                Text(a.read, style=_STYLE.get(a.read, "")),
                Text(a.write, style=_STYLE.get(a.write, "") if a.needs_write else "dim"),
                needs or "—",
                Text(redact(note)),
            )
        console.print(table)
    order = {"key": 0, "database": 1, "proxy": 2}
    checks = sorted(
        (f for f in report.findings if f.area != "collection"), key=lambda f: order[f.area]
    )
    if checks:
        table = Table(title="Key, database and proxy", title_justify="left")
        for col in ("check", "status", "detail"):
            table.add_column(col, overflow="fold")
        for f in checks:
            label, style = _STATUS[f.status]
            table.add_row(
                f"{f.area}: {f.subject}", Text(label, style=style), Text(redact(f.detail))
            )
        console.print(table)
    todo = [f for f in report.findings if f.status in (FIX, WARN) and f.fix]
    if todo:
        console.print(Text("What to do:", style="bold"))
        for i, f in enumerate(sorted(todo, key=lambda f: -_rank(f.status)), 1):
            label, style = _STATUS[f.status]
            line = Text(f"{i:>3}. ")
            line.append(f"[{label}] ", style=style)
            line.append(redact(f"{f.subject}: {f.fix}"))
            console.print(line)
    console.print(
        Text(report.summary(), style="bold red" if report.fixes else "bold green"),
        soft_wrap=True,
    )
