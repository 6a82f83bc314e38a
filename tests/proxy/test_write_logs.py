"""One log line per write: accepted or refused, with no secret."""

from __future__ import annotations

import logging

import psycopg
import pytest

from tests.proxy.writes_fixtures import WriteRig


def test_accepted_and_refused_writes_are_logged(
    writes: WriteRig, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="stripesync.proxy.writes"),
        writes.connect() as conn,
    ):
        conn.execute("INSERT INTO stripe.customer (email) VALUES ('logged@example.com')")
        with pytest.raises(psycopg.Error):
            conn.execute("UPDATE stripe.customer SET created = now()")
    messages = [r.getMessage() for r in caplog.records if r.name == "stripesync.proxy.writes"]
    assert "write to customer accepted by Stripe" in messages
    refused = [m for m in messages if m.startswith("refused write to customer (")]
    assert refused and "created" in refused[0]
    assert not any("sk_" in m for m in messages)
