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
