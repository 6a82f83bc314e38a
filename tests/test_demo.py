"""`stripesync demo`, the README's first command, end to end in a subprocess: it is used
while it runs (the status page, a query, the example write through the proxy)."""

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import psycopg

from stripesync.db.embedded import EmbeddedPostgres


def test_demo_backfills_follows_serves_and_writes_through_the_proxy(pg_data_dir):
    proc = subprocess.Popen(
        [sys.executable, "-m", "stripesync", "demo", "--customers", "40", "--data-dir",
         str(pg_data_dir), "--no-progress", "--http-listen", "127.0.0.1:0",
         "--proxy-listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        lines.extend(line.rstrip("\n") for line in proc.stderr)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any(ln.startswith("new customers and updates") for ln in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "\n".join(lines)
            time.sleep(0.1)

        def after(prefix: str) -> str:
            return next(ln for ln in lines if ln.startswith(prefix))

        direct = after("database: psql").split("'")[1]
        proxied = after("through the proxy: psql").split("'")[1]
        page = after("status page: ").split(": ", 1)[1]
        example = next(ln.strip() for ln in lines if ln.strip().startswith("INSERT INTO"))
        assert not [ln for ln in lines if ln.startswith("  skipped ")]
        # the example write, as printed, through the proxy: Stripe first, then the table
        with psycopg.connect(proxied, autocommit=True) as conn:
            (new_id,) = conn.execute(example).fetchone()
        assert new_id.startswith("cus_")
        with psycopg.connect(direct) as conn:
            assert conn.execute("SELECT email FROM stripe.customer WHERE id = %s",
                                (new_id,)).fetchone() == ("you@example.com",)
            assert conn.execute("SELECT count(*) FROM stripe.customer").fetchone()[0] >= 41
        assert httpx.get(page, timeout=10).status_code == 200
        time.sleep(2.5)  # the trickle of SDK activity arrives through the live sync
        with psycopg.connect(direct) as conn:
            live = conn.execute(
                "SELECT count(*) FROM stripe.customer WHERE email LIKE 'live%%'"
            ).fetchone()[0]
        assert live >= 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    assert any("live sync applied" in ln for ln in lines)
    assert not any("Traceback" in ln for ln in lines)
    # the demo started the embedded PostgreSQL: Ctrl-C stopped it too
    assert lines[-1] == "embedded PostgreSQL stopped", "\n".join(lines)
    assert not EmbeddedPostgres(pg_data_dir).is_running()


def test_demo_leaves_an_embedded_postgres_it_found_running(pg_data_dir):
    pg = EmbeddedPostgres(pg_data_dir, port=0, fast=True)
    pg.start()  # started before the demo (another command, `stripesync db start`)
    try:
        pid = pg.info.pid
        out = subprocess.run(
            [sys.executable, "-m", "stripesync", "demo", "--customers", "5", "--duration",
             "1", "--data-dir", str(pg_data_dir), "--no-progress", "--http-listen",
             "127.0.0.1:0", "--proxy-listen", "127.0.0.1:0"],
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        last = out.stderr.strip().splitlines()[-1]
        assert last.startswith("embedded PostgreSQL left running (it was running before"), last
        info = EmbeddedPostgres(pg_data_dir).find_running()
        assert info is not None and info.pid == pid
    finally:
        pg.stop()
