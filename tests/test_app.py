"""The `backfill` and `status` commands as a user runs them: exit codes, one-line errors,
no secrets, the status table."""

from __future__ import annotations

import json
import re

import pytest

from stripesync.cli import main
from stripesync.emulator.generator import generate

KEY = "sk_test_cli_secret_value_1234"
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) stripesync")


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_backfill_then_status(emulator, database_url, capsys) -> None:
    generate(emulator.state, customers=30, seed=2, subscriptions=0, charges=0)
    code, _, err = _run(
        capsys, "backfill", "--api-key", KEY, "--api-base", emulator.url,
        "--database-url", database_url, "--collections", "customer,product", "--no-progress",
    )
    assert code == 0, err
    assert "backfilled" in err and KEY not in err
    code, out, _ = _run(capsys, "status", "--database-url", database_url, "--json")
    assert code == 0
    status = json.loads(out)
    rows = {r["collection"]: r for r in status["collections"]}
    assert rows["customer"]["rows"] == 30 and rows["customer"]["state"] == "done"
    assert rows["customer"]["last_change_at"]
    assert set(rows) == {"customer", "product"}
    assert status["events_cursor"] is not None
    code, out, _ = _run(capsys, "status", "--database-url", database_url)
    assert code == 0 and "customer" in out and "30" in out and "done" in out
    # to a file or a pipe: one line per collection, never folded at 80 columns
    lines = out.splitlines()
    assert lines[0] == "stripesync: schema stripe"
    assert lines[1].split() == ["collection", "rows", "backfill", "last", "change", "last",
                                "re-list", "skipped"]  # fmt: skip
    by_name = {ln.split()[0]: ln.split() for ln in lines[2:-1]}
    assert set(by_name) == {"customer", "product"}
    assert by_name["customer"][1:3] == ["30", "done"]
    assert status["events_cursor"]["event_id"] is None  # generated objects: no events
    assert lines[-1].startswith("events cursor: before the first event")


def test_backfill_again_brings_the_copy_up_to_date(emulator, database_url, capsys) -> None:
    """The second `backfill` of a finished copy reads the events since its cursor: a
    customer created in between lands, and the command says what it did."""
    import stripe

    generate(emulator.state, customers=12, seed=4, subscriptions=0, charges=0)
    argv = ("backfill", "--api-key", KEY, "--api-base", emulator.url, "--database-url",
            database_url, "--collections", "customer", "--no-progress")  # fmt: skip
    code, _, err = _run(capsys, *argv)
    assert code == 0, err
    assert "backfilled 12 objects from 1 collections" in err
    assert "already backfilled" not in err
    client = stripe.StripeClient(KEY, base_addresses={"api": emulator.url})
    late = client.v1.customers.create({"name": "Late Comer"}).id
    code, _, err = _run(capsys, *argv)
    assert code == 0, err
    assert "backfilled 0 objects from 0 collections" in err
    assert "the copy was already backfilled: applied 1 events since" in err
    assert "`stripesync run` keeps it current" in err
    code, out, _ = _run(capsys, "status", "--database-url", database_url, "--json")
    rows = {r["collection"]: r for r in json.loads(out)["collections"]}
    assert rows["customer"]["rows"] == 13, late


def test_skipped_collections_give_exit_code_3(emulator, database_url, capsys) -> None:
    generate(emulator.state, customers=5, seed=2, subscriptions=0, charges=3)
    emulator.controls.restrict("rk_test_cli_restricted_99", {"*": "read", "charge": "none"})
    code, _, err = _run(
        capsys, "backfill", "--api-key", "rk_test_cli_restricted_99", "--api-base",
        emulator.url, "--database-url", database_url, "--collections", "customer,charge",
        "--no-progress",
    )
    assert code == 3
    assert "skipped charge: permission denied" in err
    assert "rk_test_cli_restricted_99" not in err


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("bad key", "Stripe refused the API key"),
        ("no API", "cannot reach the Stripe API"),
        ("no database", "cannot connect to the database"),
        ("no key", "no Stripe API key"),
        ("unknown collection", "unknown collection"),
        ("database URL of words", "neither a URL nor key=value pairs: expected postgresql://"),
        ("database port not a number", "has port 'abc': a port is a number"),
        ("database URL of another scheme", "is not a PostgreSQL URL (scheme 'mysql')"),
    ],
)
def test_bad_setup_is_one_line_without_secrets(
    case: str, expected: str, emulator, database_url, pg_server, capsys
) -> None:
    key, base, db = KEY, emulator.url, database_url
    extra: list[str] = []
    if case == "bad key":
        emulator.controls.configure(allowed_keys=["sk_test_other"])
    elif case == "no API":
        base = "http://127.0.0.1:9"  # discard port: nothing listens
    elif case == "no database":
        db = pg_server.url("postgres", user="nobody", password="secret-db-password")
    elif case == "no key":
        key = ""
    elif case == "database URL of words":
        db = "not a url"
    elif case == "database port not a number":
        db = "postgresql://nobody:secret-db-password@127.0.0.1:abc/postgres"
    elif case == "database URL of another scheme":
        db = "mysql://nobody:secret-db-password@127.0.0.1/postgres"
    else:
        extra = ["--collections", "customer,nonsense"]
    code, _, err = _run(
        capsys, "backfill", "--api-key", key, "--api-base", base, "--database-url", db,
        "--no-progress", "--max-rps", "50", *extra,
    )
    # 2: the command line, a setting or a URL is wrong (nothing contacted); 1: at run time
    usage = case.startswith(("no key", "unknown", "database"))
    assert code == (2 if usage else 1), err
    # log lines (a retry, say) may come first; the error itself is one line, the last
    lines = [ln for ln in err.splitlines() if ln.strip() and not LOG_LINE.match(ln)]
    assert len(lines) == 1 and lines[0].startswith("stripesync: "), err
    assert err.strip().splitlines()[-1] == lines[0]
    assert expected in lines[0].lower() or expected in lines[0]
    assert "Traceback" not in err and KEY not in err and "secret-db-password" not in err


def test_roles_apply_lets_the_app_read_but_not_write(pg_server, database_url, capsys) -> None:
    import psycopg

    from stripesync.catalog import build_catalog
    from stripesync.schema.migrate import migrate

    dbname = database_url.rsplit("/", 1)[1]
    app_role = pg_server.create_role()
    with psycopg.connect(database_url, autocommit=True) as conn:
        import asyncio

        async def _migrate() -> None:
            async with await psycopg.AsyncConnection.connect(database_url,
                                                             autocommit=True) as a:
                await migrate(a, "stripe", build_catalog().select(["customer"]))

        asyncio.run(_migrate())
        conn.execute("INSERT INTO stripe.customer (id, _raw, _stripe_time) "
                     "VALUES ('cus_r', '{\"id\": \"cus_r\"}', now())")
    code, _, err = _run(capsys, "roles", "--database-url", database_url, "--app-role",
                        app_role.name, "--apply")
    assert code == 0, err
    with psycopg.connect(app_role.url(dbname), autocommit=True) as app:
        assert app.execute("SELECT id FROM stripe.customer").fetchall() == [("cus_r",)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("DELETE FROM stripe.customer")


def test_the_events_cursor_is_said_in_words() -> None:
    from stripesync.app import events_cursor_line

    assert "no backfill or run has recorded" in events_cursor_line(None)
    assert "`stripesync run` records it" in events_cursor_line(None)
    assert events_cursor_line({"event_id": None, "event_created": None}).startswith(
        "events cursor: before the first event"
    )
    line = events_cursor_line({"event_id": "evt_1", "event_created": "2026-12-04T10:00:00Z"})
    assert line == (
        "events cursor: evt_1 (created 2026-12-04T10:00:00Z): the live sync resumes after "
        "this event"
    )
