"""`stripesync doctor` against the emulator and a real PostgreSQL: what a key may read and
write, the database's privileges and the proxy's roles, the exit codes, no secrets."""

from __future__ import annotations

import json
import re

import psycopg
import pytest
from psycopg import sql

from stripesync import cli, doctor
from stripesync.emulator.generator import generate
from stripesync.schema.migrate import migrate

FULL = "sk_test_doctor_full_key_SECRET_0123"
RESTRICTED = "rk_test_x"
RESTRICTED_LONG = "rk_test_doctor_restricted_SECRET_4567"
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) stripesync")


def _error_lines(err: str) -> list[str]:
    """stderr without log lines (a retry, say): the error itself is one line, the last."""
    lines = [ln for ln in err.splitlines() if ln.strip() and not LOG_LINE.match(ln)]
    assert lines and err.strip().splitlines()[-1] == lines[-1], err
    return lines


def test_doctor_is_a_command() -> None:
    assert doctor.register in cli._commands()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["doctor", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _access(report: dict) -> dict[str, dict]:
    return {a["collection"]: a for a in report["collections"]}


def _findings(report: dict, status: str) -> list[dict]:
    return [f for f in report["findings"] if f["status"] == status]


async def _migrate(url: str, names: list[str]) -> None:
    from stripesync.catalog import build_catalog

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        await migrate(c, "stripe", build_catalog().select(names))


def test_a_full_key_reads_everything_and_is_advised_to_restrict(
    emulator, database_url, capsys
) -> None:
    generate(emulator.state, customers=3, seed=5, subscriptions=1, charges=2)
    code, out, err = _run(
        capsys, "--api-key", FULL, "--api-base", emulator.url, "--database-url",
        database_url, "--max-rps", "500", "--json",
    )
    report = json.loads(out)
    access = _access(report)
    # every catalog collection is checked, read and (secret key) writable
    assert len(access) == 117
    assert access["customer"]["read"] == "yes" and access["customer"]["write"] == "yes"
    assert access["charge"]["read"] == "yes"
    assert access["balance"]["read"] == "yes" and access["balance"]["write"] == "n/a"
    assert access["usage_record"]["read"] == "n/a"  # write-only: nothing to read
    assert access["source_mandate_notification"]["read"] == "yes"  # from events
    assert report["key"]["mode"] == "test" and report["key"]["kind"] == "secret"
    # a secret key works: advice, not a fix
    assert any(f["subject"] == "kind" for f in _findings(report, "warn"))
    assert not [f for f in _findings(report, "fix") if f["area"] in ("key", "collection")]
    (clock,) = [f for f in report["findings"] if f["subject"] == "clock"]
    assert clock["status"] == "ok" and "within" in clock["detail"]
    assert report["database"]["version"].startswith("18")
    assert "doctor_full_key" not in out + err and report["key"]["key"] == "sk_test_…"
    # the emulator's account serves every collection of the pinned version; legacy
    # endpoints are served at their older Stripe-Version: nothing is refused
    assert not [a for a in access.values() if a["read"] not in ("yes", "n/a")], out
    assert access["upcoming_customer_invoice"]["read"] == "yes"  # "none upcoming" is a yes
    assert access["application"]["read_detail"] == "through charge (yes)"
    # a superuser on the test database and a secret key: advice only
    assert code == 0 and report["ok"] is True


def test_a_restricted_key_lists_what_to_grant(emulator, database_url, capsys) -> None:
    generate(emulator.state, customers=3, seed=5, subscriptions=1, charges=2)
    emulator.controls.restrict(RESTRICTED, {"customer": "read", "charge": "none", "*": "read"})
    code, out, err = _run(
        capsys, "--api-key", RESTRICTED, "--api-base", emulator.url, "--database-url",
        database_url, "--max-rps", "500", "--collections", "customer,charge,tax_id,invoice",
        "--json",
    )
    assert code == 3, out + err
    report = json.loads(out)
    access = _access(report)
    assert report["key"]["kind"] == "restricted" and report["key"]["mode"] == "test"
    assert access["customer"]["read"] == "yes" and access["customer"]["write"] == "no"
    assert access["charge"]["read"] == "no" and access["charge"]["status"] == "fix"
    assert "permission denied" in access["charge"]["read_detail"]
    assert access["tax_id"]["read"] == "yes"  # probed under a real customer
    # webhook endpoints: checked for --register-webhook, read-only here: a fix
    assert access["webhook_endpoint"]["write"] == "no"
    assert access["webhook_endpoint"]["needs_write"] is True
    fixes = {f["subject"]: f for f in _findings(report, "fix") if f["area"] == "collection"}
    assert set(fixes) == {"charge", "webhook_endpoint"}
    assert fixes["charge"]["fix"] == "grant Read on charge (rak_charge_read)"
    assert "rak_webhook_endpoint_write" in fixes["webhook_endpoint"]["fix"]
    assert RESTRICTED not in out.replace("rk_test_…", "") and RESTRICTED not in err
    # no object was made by the probes
    assert emulator.controls.stats()["objects"].get("webhook_endpoint", 0) == 0
    # without --register-webhook, write on webhook endpoints is not needed
    code, out, _ = _run(
        capsys, "--api-key", RESTRICTED, "--api-base", emulator.url, "--database-url",
        database_url, "--max-rps", "500", "--collections", "customer,charge", "--json",
        "--no-webhooks",
    )
    report = json.loads(out)
    assert code == 3 and "webhook_endpoint" not in _access(report)
    assert [f["subject"] for f in _findings(report, "fix")] == ["charge"]


def test_write_probes_change_nothing(emulator, database_url, capsys) -> None:
    generate(emulator.state, customers=2, seed=5, subscriptions=0, charges=0)
    before = emulator.controls.stats()["objects"]
    emulator.controls.restrict(RESTRICTED_LONG, {"*": "write"})
    code, out, err = _run(
        capsys, "--api-key", RESTRICTED_LONG, "--api-base", emulator.url, "--database-url",
        database_url, "--max-rps", "500", "--json", "--proxy-writes",
    )
    report = json.loads(out)
    access = _access(report)
    assert emulator.controls.stats()["objects"] == before
    assert code == 0, out  # every write it may need; a superuser database is advice
    writable = [a for a in access.values() if a["write"] == "yes"]
    assert len(writable) > 40 and access["customer"]["write"] == "yes"
    assert access["webhook_endpoint"]["write"] == "yes"
    assert not [a for a in access.values() if a["write"] == "no"]
    assert not [f for f in _findings(report, "fix") if f["area"] == "collection"], out
    assert RESTRICTED_LONG not in out and RESTRICTED_LONG not in err


def test_the_table_and_the_summary_line(emulator, database_url, capsys) -> None:
    emulator.controls.restrict(RESTRICTED, {"customer": "read", "charge": "none", "*": "read"})
    code, out, _ = _run(
        capsys, "--api-key", RESTRICTED, "--api-base", emulator.url, "--database-url",
        database_url, "--max-rps", "500", "--collections", "customer,charge",
    )
    assert code == 3
    lines = out.splitlines()
    assert any("customer" in ln and "yes" in ln and " no " in ln for ln in lines), out
    assert any(ln.strip().startswith("│ charge") and " no " in ln for ln in lines), out
    assert "What to do:" in out and "grant Read on charge" in out
    assert lines[-1].startswith("doctor: ") and "to fix" in lines[-1]
    assert "rk_test_x" not in out.replace("rk_test_…", "")


async def test_database_roles_and_privileges(pg_server, database_url, capsys) -> None:
    # a sync role that owns the schema, a reader for the proxy's clients, and a role
    # that holds TRUNCATE on a synced table (which the guard trusts)
    sync_role = pg_server.create_role()
    reader = pg_server.create_role()
    writer = pg_server.create_role()
    dbname = database_url.rsplit("/", 1)[1].split("?")[0]
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute(sql.SQL("CREATE SCHEMA stripe AUTHORIZATION {}").format(
            sql.Identifier(sync_role.name)))
        c.execute(sql.SQL("GRANT CONNECT, TEMPORARY, CREATE ON DATABASE {} TO {}").format(
            sql.Identifier(dbname), sql.Identifier(sync_role.name)))
    url = pg_server.url(dbname, user=sync_role.name, password=sync_role.password)
    await _migrate(url, ["customer", "charge"])
    with psycopg.connect(url, autocommit=True) as c:
        for role in (reader.name, writer.name):
            c.execute(sql.SQL("GRANT USAGE ON SCHEMA stripe TO {}").format(sql.Identifier(role)))
        c.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA stripe TO {}").format(
            sql.Identifier(reader.name)))
        c.execute(sql.SQL("GRANT SELECT, UPDATE, TRUNCATE ON stripe.customer TO {}").format(
            sql.Identifier(writer.name)))
    report = doctor.Report()
    from stripesync.app import connect_pool

    async with connect_pool(url, max_size=2) as pool:
        await doctor.check_database(pool, "stripe", report)
    by_subject = {f.subject: f for f in report.findings}
    assert by_subject["server"].status == "ok"
    assert by_subject["role"].status == "ok"  # not a superuser
    assert by_subject["schema"].status == "ok"
    assert by_subject["tables"].status == "ok"
    assert report.database["proxy_client_roles"] == sorted([reader.name, writer.name])
    assert by_subject["client roles"].status == "warn"  # the writer reads 1 table of many
    assert by_subject["default privileges"].status == "warn"
    assert "ALTER DEFAULT PRIVILEGES" in (by_subject["default privileges"].fix or "")
    direct = by_subject[f"role {writer.name}"]
    assert direct.status == "warn" and "customer" in direct.detail
    assert "REVOKE TRUNCATE" in (direct.fix or "")
    assert f"role {reader.name}" not in by_subject
    assert "guard" not in by_subject  # migrations added it to every table
    assert not report.fixes

    # the reader as the sync role: no CREATE on the schema nor the database (migrations
    # need both), tables it does not own nor write
    url = pg_server.url(dbname, user=reader.name, password=reader.password)
    report = doctor.Report()
    async with connect_pool(url, max_size=2) as pool:
        await doctor.check_database(pool, "stripe", report)
    fixes = [(f.subject, f.fix) for f in report.fixes]
    assert [s for s, _ in fixes] == ["schema", "migrations", "tables", "tables"], fixes
    assert f'GRANT CREATE ON DATABASE "{dbname}"' in fixes[1][1]

    # a role that cannot create the schema, nor temporary tables
    lonely = pg_server.create_role()
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute(sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC").format(
            sql.Identifier(dbname)))
    url = pg_server.url(dbname, user=lonely.name, password=lonely.password)
    report = doctor.Report()
    async with connect_pool(url, max_size=2) as pool:
        await doctor.check_database(pool, "elsewhere", report)
    fixes = {f.subject: f for f in report.fixes}
    assert set(fixes) == {"schema", "temporary tables"}
    assert "CREATE SCHEMA \"elsewhere\" AUTHORIZATION" in (fixes["schema"].fix or "")


def test_a_superuser_database_is_advice_not_a_fix(database_url, capsys) -> None:
    code, out, _ = _run(capsys, "--database-url", database_url, "--json")
    report = json.loads(out)
    assert code == 3  # no API key: that is the one thing to fix
    assert [f["subject"] for f in _findings(report, "fix")] == ["API key"]
    assert any(f["subject"] == "role" and f["status"] == "warn" for f in report["findings"])


def test_a_bad_database_url_is_one_line_and_exit_1(pg_server, emulator, capsys) -> None:
    url = pg_server.url("postgres", user="nobody", password="secret-db-password")
    code, out, err = _run(
        capsys, "--api-key", FULL, "--api-base", emulator.url, "--database-url", url,
    )
    assert code == 1
    lines = _error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("stripesync: cannot connect to the database")
    assert "secret-db-password" not in err + out and FULL not in err + out


@pytest.mark.parametrize(
    ("case", "expected"),
    [("bad key", "Stripe refused the API key"), ("no API", "cannot reach the Stripe API")],
)
def test_an_unusable_key_is_one_line_and_exit_1(
    case, expected, emulator, database_url, capsys
) -> None:
    base = emulator.url
    if case == "bad key":
        emulator.controls.configure(allowed_keys=["sk_test_other"])
    else:
        base = "http://127.0.0.1:9"
    code, out, err = _run(
        capsys, "--api-key", FULL, "--api-base", base, "--database-url", database_url,
    )
    assert code == 1
    lines = _error_lines(err)
    assert len(lines) == 1 and expected in lines[0], err
    assert FULL not in err + out and "Traceback" not in err


def test_failures_in_the_middle_of_the_probes(emulator, database_url, capsys) -> None:
    argv = (
        "--api-key", FULL, "--api-base", emulator.url, "--database-url", database_url,
        "--max-rps", "500", "--collections", "customer,product", "--no-webhooks", "--json",
    )
    # Stripe failing one collection (after the retries): reported, not fatal
    emulator.controls.fault("500", "/v1/products", method="GET")
    code, out, _ = _run(capsys, *argv)
    report = json.loads(out)
    access = _access(report)
    assert access["product"]["read"] == "error" and "HTTP 500" in access["product"]["read_detail"]
    assert access["customer"]["read"] == "yes"
    assert any(f["subject"] == "product" for f in _findings(report, "warn"))
    assert code == 0
    # Stripe unreachable half-way: one line, exit 1, the other probes stopped
    emulator.controls.clear_faults()
    emulator.controls.fault("reset", "/v1/customers", method="GET")
    code, out, err = _run(capsys, *argv[:-1])
    assert code == 1 and out == ""
    (line,) = _error_lines(err)
    assert line.startswith("stripesync: cannot reach the Stripe API"), err
    assert "Task exception" not in err and FULL not in err


def test_a_clock_off_stripes_is_advice(emulator, database_url, capsys) -> None:
    emulator.controls.skew(-120)  # this machine two minutes ahead of Stripe
    code, out, _ = _run(
        capsys, "--api-key", FULL, "--api-base", emulator.url, "--database-url",
        database_url, "--max-rps", "500", "--json", "--collections", "customer",
    )
    report = json.loads(out)
    (clock,) = [f for f in report["findings"] if f["subject"] == "clock"]
    assert clock["status"] == "warn" and "ahead of Stripe's" in clock["detail"]
    assert clock["detail"].startswith("this machine's clock is 1")  # 119.x or 120.x s
    assert -121.5 < report["key"]["clock_offset_seconds"] < -118.5
    assert code == 0
