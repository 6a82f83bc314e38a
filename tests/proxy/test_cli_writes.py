"""`stripesync proxy` on its own: writes go to Stripe with a key, are refused without."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from stripesync.catalog import build_catalog
from stripesync.schema.migrate import migrate


@contextmanager
def _proxy(database_url: str, *extra: str) -> Iterator[int]:
    env = {k: v for k, v in os.environ.items() if k != "STRIPE_API_KEY"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stripesync", "proxy", "--proxy-listen", "127.0.0.1:0",
         "--database-url", database_url, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**env, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        match = re.fullmatch(r"proxy listening on 127\.0\.0\.1:(\d+)", line)
        assert match is not None, (line, proc.stderr.read() if proc.stderr else "")
        yield int(match.group(1))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
async def migrated(database_url: str) -> str:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await migrate(conn, "stripe", build_catalog().select(["customer"]))
    return database_url


def test_without_a_key_writes_are_refused_not_passed_through(migrated: str) -> None:
    with _proxy(migrated) as port:
        url = psycopg.conninfo.make_conninfo(migrated, host="127.0.0.1", port=str(port))
        with psycopg.connect(url, autocommit=True) as conn:
            with pytest.raises(psycopg.Error) as info:
                conn.execute("INSERT INTO stripe.customer (id, email) VALUES ('cus_x', 'a@b.c')")
            assert "need a Stripe key" in str(info.value)
            assert conn.execute("SELECT count(*) FROM stripe.customer").fetchone() == (0,)


def test_with_a_key_writes_go_to_stripe_first(migrated: str, emulator) -> None:
    with _proxy(migrated, "--api-key", "sk_test_proxy_cli", "--api-base", emulator.url) as port:
        url = psycopg.conninfo.make_conninfo(migrated, host="127.0.0.1", port=str(port))
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "INSERT INTO stripe.customer (email) VALUES ('cli@example.com') RETURNING id"
            ).fetchone()
            assert row is not None and row[0].startswith("cus_")
            stored = conn.execute(
                "SELECT email FROM stripe.customer WHERE id = %s", row
            ).fetchone()
    assert stored == ("cli@example.com",)
    assert emulator.stripe().v1.customers.retrieve(row[0]).email == "cli@example.com"
