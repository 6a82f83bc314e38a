"""`stripesync run` as a user runs it: a real process against the emulator and a real
PostgreSQL, stopped by a signal."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from stripesync.db.embedded import EmbeddedPostgres
from stripesync.emulator.generator import generate

KEY = "sk_test_run_secret_key_0001"
WEBHOOK_SECRET = "whsec_run_test_secret_value"


class Proc:
    """A running `stripesync run` whose stderr is collected in the background."""

    def __init__(self, *args: str, command: str = "run", env: dict[str, str] | None = None) -> None:
        self.p = subprocess.Popen(
            [sys.executable, "-m", "stripesync", command, "--no-progress", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.p.stderr is not None
        for line in self.p.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, prefix: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if line.startswith(prefix):
                    return line
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no line starting {prefix!r}; stderr:\n" + "\n".join(self.lines))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        self.p.send_signal(sig)
        code = self.p.wait(timeout)
        self._t.join(5)
        return code

    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def run_proc(emulator, database_url) -> Iterator[Any]:
    procs: list[Proc] = []

    def start(*extra: str) -> Proc:
        proc = Proc(
            "--api-key", KEY, "--api-base", emulator.url, "--database-url", database_url,
            "--http-listen", "127.0.0.1:0", "--proxy-listen", "127.0.0.1:0",
            "--max-rps", "200", *extra,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.p.poll() is None:
            proc.p.kill()
            proc.p.wait()


def _count(url: str, sql: str, *args: Any) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, args or None).fetchone()
        return row[0] if row else None


def _until(fn: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def _sign(body: bytes, secret: str) -> str:
    t = int(time.time())
    sig = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={sig}"


def test_run_backfills_follows_serves_and_stops(emulator, database_url, run_proc) -> None:
    generate(emulator.state, customers=40, seed=9, subscriptions=5, charges=10)
    proc = run_proc("--collections", "customer,charge,subscription,event")
    url = proc.wait_for("status and metrics: ").split(": ", 1)[1]
    assert _count(database_url, "SELECT count(*) FROM stripe.customer") == 40
    # a change at Stripe lands through the live sync
    sdk = emulator.stripe()
    c = sdk.v1.customers.create(params={"email": "run@example.com"})
    assert _until(lambda: _count(database_url, "SELECT email FROM stripe.customer WHERE id = %s",
                                 c.id)) == "run@example.com"
    sdk.v1.customers.delete(c.id)
    tombstone = "SELECT count(*) FROM stripe._deletions WHERE id = %s"
    assert _until(lambda: _count(database_url, tombstone, c.id)), proc.text()
    assert _count(database_url, "SELECT count(*) FROM stripe.customer WHERE id = %s", c.id) == 0
    # the proxy relays to the same database: a client logs in with its own credentials
    proxied = proc.wait_for("proxy: ").split(": ", 1)[1]
    password = psycopg.conninfo.conninfo_to_dict(database_url)["password"]
    with psycopg.connect(proxied, password=password, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM stripe.customer").fetchone()
        assert row == (40,)
        # a write through the proxy goes to Stripe first, then lands in the table
        (new_id,) = conn.execute(
            "INSERT INTO stripe.customer (email, metadata) VALUES (%s, %s) RETURNING id",
            ("proxied@example.com", '{"via": "proxy"}'),
        ).fetchone()
    assert emulator.stripe().v1.customers.retrieve(new_id).email == "proxied@example.com"
    assert _count(database_url, "SELECT metadata ->> 'via' FROM stripe.customer WHERE id = %s",
                  new_id) == "proxy"
    health = httpx.get(f"{url}/health", timeout=5)
    assert health.status_code == 200, health.text
    assert health.json()["database"] == "ok" and health.json()["events_lag_seconds"] < 5
    metrics = httpx.get(f"{url}/metrics", timeout=5).text
    assert 'stripesync_events_applied_total{type="customer.created"}' in metrics
    assert 'stripesync_backfill_done{collection="customer"} 1.0' in metrics
    assert 'stripesync_backfill_objects_total{collection="customer"} 40.0' in metrics
    assert "stripesync_stripe_requests_total{" in metrics
    assert "stripesync_store_batch_rows_count" in metrics
    page = httpx.get(f"{url}/", timeout=5)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    status = httpx.get(f"{url}/status.json", timeout=5).json()
    assert abs(status["stripe_clock_offset_seconds"]) < 1.5  # the emulator runs here
    assert "customer" in json.dumps(status) and KEY not in page.text
    assert KEY not in metrics and KEY not in health.text
    assert proc.stop() == 0
    assert "stopped: " in proc.text() and "Traceback" not in proc.text()
    assert KEY not in proc.text()


def test_http_token_guards_the_status_page_and_metrics(run_proc) -> None:
    token = "status-token-0123456789"
    proc = run_proc("--collections", "customer", "--http-token", token,
                    "--http-listen", "127.0.0.1:0", "--proxy-listen", "off")
    url = proc.wait_for("status and metrics: ").split(": ", 1)[1]
    for path in ("/", "/status.json", "/metrics"):
        assert httpx.get(f"{url}{path}", timeout=5).status_code == 401
        ok = httpx.get(f"{url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert ok.status_code == 200 and token not in ok.text
    assert httpx.get(f"{url}/health", timeout=5).status_code == 200
    assert proc.stop() == 0
    assert token not in proc.text()


def test_proxy_workers_each_write_through_to_stripe(emulator, database_url, run_proc) -> None:
    proc = run_proc("--collections", "customer", "--proxy-workers", "2")
    proxied = proc.wait_for("proxy: ").split(": ", 1)[1]
    password = psycopg.conninfo.conninfo_to_dict(database_url)["password"]
    children = Path(f"/proc/{proc.p.pid}/task/{proc.p.pid}/children").read_text()
    (worker,) = [int(p) for p in children.split()]
    # a worker's secrets come through its environment, not its command line
    argv = Path(f"/proc/{worker}/cmdline").read_bytes().decode()
    assert "--worker\x001/2" in argv and KEY not in argv and password not in argv
    written: dict[int, str] = {}
    deadline = time.monotonic() + 20
    while len(written) < 2:  # the kernel picks the worker: connect until both served
        assert time.monotonic() < deadline, written
        with psycopg.connect(proxied, password=password, autocommit=True) as conn:
            served_by = conn.info.backend_pid % 2
            if served_by in written:
                continue
            (written[served_by],) = conn.execute(
                "INSERT INTO stripe.customer (email) VALUES (%s) RETURNING id",
                (f"worker{served_by}@example.com",),
            ).fetchone()
    for served_by, new_id in written.items():
        assert emulator.stripe().v1.customers.retrieve(new_id).email == (
            f"worker{served_by}@example.com"
        )
        assert _count(database_url, "SELECT email FROM stripe.customer WHERE id = %s",
                      new_id) == f"worker{served_by}@example.com"
    # the first process's /metrics counts the writes of both workers
    url = proc.wait_for("status and metrics: ").split(": ", 1)[1]
    wanted = 'stripesync_proxy_writes_total{collection="customer",outcome="accepted"} 2.0'
    deadline = time.monotonic() + 10
    while wanted not in (metrics := httpx.get(f"{url}/metrics", timeout=5).text):
        assert time.monotonic() < deadline, metrics
        time.sleep(0.1)
    assert proc.stop() == 0
    assert not Path(f"/proc/{worker}").exists()  # stopped and reaped by the run
    assert KEY not in proc.text() and password not in proc.text()
    assert "Traceback" not in proc.text()


def test_a_webhook_nudges_an_immediate_poll(emulator, database_url, run_proc) -> None:
    """With polls 30 s apart, only the webhook can make a change land in seconds."""
    proc = run_proc(
        "--collections", "customer", "--poll-interval", "30", "--webhook-secret", WEBHOOK_SECRET
    )
    url = proc.wait_for("status and metrics: ").split(": ", 1)[1]
    time.sleep(0.3)  # the first poll is done: the next is 30 s away
    c = emulator.stripe().v1.customers.create(params={"email": "nudge@example.com"})
    event = {"id": "evt_nudge", "object": "event", "type": "customer.created"}
    body = json.dumps(event).encode()
    forged = httpx.post(f"{url}/webhooks/stripe", content=body,
                        headers={"Stripe-Signature": _sign(body, "whsec_wrong")}, timeout=5)
    assert forged.status_code == 400
    assert _count(database_url, "SELECT count(*) FROM stripe.customer WHERE id = %s", c.id) == 0
    good = httpx.post(f"{url}/webhooks/stripe", content=body,
                      headers={"Stripe-Signature": _sign(body, WEBHOOK_SECRET)}, timeout=5)
    assert good.status_code == 200
    assert _until(lambda: _count(database_url,
                                 "SELECT count(*) FROM stripe.customer WHERE id = %s", c.id), 5)
    assert WEBHOOK_SECRET not in proc.text()
    assert proc.stop(signal.SIGINT) == 0


def test_run_refuses_bad_flags_in_one_line(emulator, database_url) -> None:
    for flags, expected in (
        (["--http-listen", "nonsense"], "http_listen (from flag --http-listen): expected"),
        (["--poll-interval", "0"], "poll_interval (from flag --poll-interval): must be"),
        (["--log-format", "xml"], "log_format (from flag --log-format): expected one of"),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "stripesync", "run", "--api-key", KEY, "--api-base",
             emulator.url, "--database-url", database_url, *flags],
            capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 2  # bad usage
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], out.stderr


def test_register_webhook_creates_the_endpoint_and_its_deliveries_nudge(
    emulator, database_url, run_proc
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hook = f"http://127.0.0.1:{port}/webhooks/stripe"
    proc = run_proc("--collections", "customer", "--poll-interval", "30",
                    "--http-listen", f"127.0.0.1:{port}", "--register-webhook", hook)
    proc.wait_for("live sync: ")
    endpoints = emulator.stripe().v1.webhook_endpoints.list().data
    assert [e.url for e in endpoints] == [hook]
    secret = _count(database_url, "SELECT value ->> 'secret' FROM stripe._secrets "
                    "WHERE key = %s", f"webhook_secret:{endpoints[0].id}")
    assert secret and secret.startswith("whsec_") and secret not in proc.text()
    assert _count(database_url, "SELECT count(*) FROM stripe._meta t "
                  "WHERE t::text LIKE '%whsec%'") == 0
    time.sleep(0.3)  # the first poll is done: the next is 30 s away
    c = emulator.stripe().v1.customers.create(params={"email": "hooked@example.com"})
    assert _until(lambda: _count(database_url,
                                 "SELECT count(*) FROM stripe.customer WHERE id = %s", c.id), 5)
    assert proc.stop() == 0
    # a second run finds the endpoint and updates it instead of adding another
    proc = run_proc("--collections", "customer", "--http-listen", f"127.0.0.1:{port}",
                    "--register-webhook", hook)
    proc.wait_for("live sync: ")
    assert len(emulator.stripe().v1.webhook_endpoints.list().data) == 1
    assert proc.stop() == 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _deliver(url: str, secret: str) -> int:
    """POST a signed delivery to a run's webhook receiver; its status code."""
    body = json.dumps({"id": "evt_signed", "object": "event", "type": "customer.created"})
    return httpx.post(f"{url}/webhooks/stripe", content=body.encode(),
                      headers={"Stripe-Signature": _sign(body.encode(), secret)},
                      timeout=5).status_code


def _nudged(emulator: Any, database_url: str, email: str) -> bool:
    """With polls 30 s apart, a customer lands within seconds only if the emulator's
    signed delivery was verified."""
    time.sleep(0.3)  # the first poll is done: the next is 30 s away
    c = emulator.stripe().v1.customers.create(params={"email": email})
    return bool(_until(lambda: _count(database_url,
                                      "SELECT count(*) FROM stripe.customer WHERE id = %s",
                                      c.id), 5))


def test_a_registered_webhooks_secret_verifies_after_a_restart_out_of_the_apps_reach(
    emulator, database_url, run_proc, pg_server
) -> None:
    from stripesync.proxy.roles import role_setup_sql

    port = _free_port()
    hook = f"http://127.0.0.1:{port}/webhooks/stripe"
    flags = ("--collections", "customer,webhook_endpoint", "--poll-interval", "30",
             "--http-listen", f"127.0.0.1:{port}")
    first = run_proc(*flags, "--register-webhook", hook)
    first.wait_for("live sync: ")
    assert first.stop() == 0
    (endpoint,) = emulator.stripe().v1.webhook_endpoints.list().data
    secret = _count(database_url, "SELECT value ->> 'secret' FROM stripe._secrets "
                    "WHERE key = %s", f"webhook_secret:{endpoint.id}")
    assert secret and secret.startswith("whsec_")
    # a restart without --register-webhook: the secret comes from the secrets table
    proc = run_proc(*flags)
    url = proc.wait_for("status and metrics: ").split(": ", 1)[1]
    proc.wait_for("live sync: ")
    assert _nudged(emulator, database_url, "restarted@example.com")
    assert _deliver(url, secret) == 200
    assert _deliver(url, "whsec_wrong") == 400
    for path in ("/", "/status.json", "/metrics", "/health"):
        assert secret not in httpx.get(f"{url}{path}", timeout=5).text, path
    assert proc.stop() == 0
    assert secret not in first.text() and secret not in proc.text()
    # the application role reads the synced endpoint, never its secret
    app = pg_server.create_role()
    owner = psycopg.conninfo.conninfo_to_dict(database_url)["user"]
    dbname = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    try:
        with psycopg.connect(database_url, autocommit=True) as admin:
            for statement in role_setup_sql("stripe", str(owner), app.name):
                admin.execute(statement)
        with psycopg.connect(app.url(dbname), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT id, secret, t::text FROM stripe.webhook_endpoint t"
            ).fetchall()
            assert [(r[0], r[1]) for r in rows] == [(endpoint.id, None)]
            assert "whsec_" not in rows[0][2]
            for table in ("_meta", "_collection_state", "_events_cursor"):
                for (text,) in conn.execute(f"SELECT t::text FROM stripe.{table} t"):
                    assert "whsec_" not in text, table
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as denied:
                conn.execute("SELECT value FROM stripe._secrets")
            assert denied.value.sqlstate == "42501"
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f'DROP OWNED BY "{app.name}"')
        pg_server.drop_role(app.name)


def test_an_older_installs_webhook_secret_moves_and_still_verifies(
    emulator, database_url, run_proc
) -> None:
    """An older version kept a registered endpoint's secret in `_meta`: the first run of
    this one verifies deliveries with it (its HTTP server starts before the migration),
    moves it to `_secrets`, and the next run finds it there."""
    import asyncio

    from stripesync.catalog import build_catalog
    from stripesync.schema.migrate import migrate

    async def _migrate() -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
            await migrate(c, "stripe", build_catalog().select(["customer"]))

    port = _free_port()
    hook = f"http://127.0.0.1:{port}/webhooks/stripe"
    endpoint = emulator.stripe().v1.webhook_endpoints.create(
        params={"url": hook, "enabled_events": ["*"]}
    )
    asyncio.run(_migrate())
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE stripe._secrets")
        conn.execute(
            "INSERT INTO stripe._meta (key, value) VALUES (%s, %s)",
            (f"webhook_secret:{endpoint.id}",
             psycopg.types.json.Jsonb({"secret": endpoint.secret, "url": hook})),
        )
    flags = ("--collections", "customer", "--poll-interval", "30",
             "--http-listen", f"127.0.0.1:{port}")
    proc = run_proc(*flags)
    proc.wait_for("live sync: ")
    assert _nudged(emulator, database_url, "upgraded@example.com")
    assert proc.stop() == 0
    assert _count(database_url, "SELECT count(*) FROM stripe._meta "
                  "WHERE key LIKE 'webhook%'") == 0
    assert _count(database_url, "SELECT value ->> 'secret' FROM stripe._secrets "
                  "WHERE key = %s", f"webhook_secret:{endpoint.id}") == endpoint.secret
    proc = run_proc(*flags)
    url = proc.wait_for("status and metrics: ").split(": ", 1)[1]
    proc.wait_for("live sync: ")
    assert _nudged(emulator, database_url, "moved@example.com")
    assert _deliver(url, endpoint.secret) == 200
    assert proc.stop() == 0
    assert endpoint.secret not in proc.text()


# ---- the embedded PostgreSQL: stopped when the command started it, else left running ----

STOPPED = "embedded PostgreSQL stopped"
LEFT_RUNNING = "embedded PostgreSQL left running (it was running before"


def _embedded_env() -> dict[str, str]:
    """No database URL and no data directory from the environment: the flags say."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "STRIPESYNC_DATA_DIR")}
    return {**env, "STRIPESYNC_LOG_LEVEL": "warning"}


def _embedded_run(emulator: Any, data_dir: Path) -> Proc:
    return Proc(
        "--api-key", KEY, "--api-base", emulator.url, "--data-dir", str(data_dir),
        "--http-listen", "127.0.0.1:0", "--proxy-listen", "127.0.0.1:0", "--max-rps", "200",
        "--collections", "customer", env=_embedded_env(),
    )  # fmt: skip


def _pid(data_dir: Path) -> int | None:
    info = EmbeddedPostgres(data_dir).find_running()
    return None if info is None else info.pid


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_run_stops_the_embedded_postgres_it_started(emulator, pg_data_dir, sig) -> None:
    generate(emulator.state, customers=5, seed=3)
    proc = _embedded_run(emulator, pg_data_dir)
    try:
        psql = proc.wait_for("embedded PostgreSQL: psql ", timeout=120)
        proc.wait_for("live sync: ")
        assert _pid(pg_data_dir) is not None
        assert EmbeddedPostgres(pg_data_dir).find_running() is not None
        assert proc.stop(sig) == 0
    finally:
        if proc.p.poll() is None:
            proc.p.kill()
            proc.p.wait()
    assert _pid(pg_data_dir) is None, proc.text()
    assert proc.lines[-1] == STOPPED, proc.text()
    assert "Traceback" not in proc.text()
    assert EmbeddedPostgres(pg_data_dir)._read_password() not in proc.text() + psql


def test_run_interrupted_while_starting_still_stops_the_embedded_postgres(
    emulator, pg_data_dir
) -> None:
    generate(emulator.state, customers=20, seed=4)
    emulator.controls.configure(latency_ms=300)  # the backfill takes a while: stop it there
    proc = _embedded_run(emulator, pg_data_dir)
    try:
        proc.wait_for("embedded PostgreSQL: psql ", timeout=120)
    finally:
        _stopped_by_sigterm(proc, pg_data_dir)


def test_run_interrupted_while_the_server_starts_still_stops_it(emulator, pg_data_dir) -> None:
    proc = _embedded_run(emulator, pg_data_dir)
    try:
        pid_file = pg_data_dir / "pgdata" / "postmaster.pid"
        deadline = time.monotonic() + 120
        while not pid_file.exists():  # the server is starting: the command is not yet in
            assert proc.p.poll() is None and time.monotonic() < deadline, proc.text()
            time.sleep(0.01)
    finally:
        _stopped_by_sigterm(proc, pg_data_dir)


def _stopped_by_sigterm(proc: Proc, pg_data_dir: Path) -> None:
    """SIGTERM ends the command cleanly, and the server it started is stopped."""
    try:
        code = proc.stop(signal.SIGTERM)
    finally:
        if proc.p.poll() is None:
            proc.p.kill()
            proc.p.wait()
    assert code in (0, 130), proc.text()
    assert _pid(pg_data_dir) is None, proc.text()
    assert proc.lines[-1] == STOPPED, proc.text()
    assert "Traceback" not in proc.text()


def test_run_leaves_a_running_embedded_postgres_running(emulator, pg_data_dir) -> None:
    pg = EmbeddedPostgres(pg_data_dir, port=0, fast=True)
    pg.start()  # started by someone else (another command, `stripesync db start`)
    try:
        pid = pg.info.pid
        generate(emulator.state, customers=5, seed=5)
        proc = _embedded_run(emulator, pg_data_dir)
        try:
            proc.wait_for("live sync: ", timeout=120)
            assert proc.stop(signal.SIGINT) == 0
        finally:
            if proc.p.poll() is None:
                proc.p.kill()
                proc.p.wait()
        assert _pid(pg_data_dir) == pid, proc.text()
        assert proc.lines[-1].startswith(LEFT_RUNNING), proc.text()
        with psycopg.connect(pg.socket_url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pg.stop()


def test_backfill_stops_the_embedded_postgres_it_started_even_after_an_error(
    emulator, pg_data_dir
) -> None:
    generate(emulator.state, customers=5, seed=6)
    base = [sys.executable, "-m", "stripesync", "backfill", "--no-progress", "--api-base",
            emulator.url, "--data-dir", str(pg_data_dir), "--collections", "customer"]
    out = subprocess.run([*base, "--api-key", KEY], capture_output=True, text=True,
                         timeout=180, env=_embedded_env())
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines()[-1] == STOPPED
    assert _pid(pg_data_dir) is None
    # an error (Stripe refuses the key): stopped all the same, exit code 1
    out = subprocess.run([*base, "--api-key", "sk_live_refused"], capture_output=True,
                         text=True, timeout=180, env=_embedded_env())
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines()[-1] == STOPPED, out.stderr
    assert _pid(pg_data_dir) is None
    # found running: left running, after success as after an error
    pg = EmbeddedPostgres(pg_data_dir, port=0, fast=True)
    pg.start()
    try:
        for key, code in ((KEY, 0), ("sk_live_refused", 1)):
            out = subprocess.run([*base, "--api-key", key], capture_output=True, text=True,
                                 timeout=180, env=_embedded_env())
            assert out.returncode == code, out.stderr
            assert out.stderr.strip().splitlines()[-1].startswith(LEFT_RUNNING), out.stderr
            assert _pid(pg_data_dir) == pg.info.pid
    finally:
        pg.stop()


def test_the_ready_banner_comes_last_and_again_on_sighup_and_in_status(
    emulator, database_url, run_proc
) -> None:
    generate(emulator.state, customers=10, seed=4, subscriptions=0, charges=0)
    proc = run_proc("--collections", "customer,event")
    proc.wait_for("proxy: ")
    banner = [ln for ln in proc.lines if ln.startswith(("live sync:", "status and", "proxy:"))]
    assert [ln.split(":")[0] for ln in banner] == ["live sync", "status and metrics", "proxy"]
    # the summary of the backfill comes before the banner, no line of the backfill after it
    first = proc.lines.index(banner[0])
    assert any(ln.startswith("backfilled ") for ln in proc.lines[:first]), proc.text()
    assert not any("backfilled" in ln for ln in proc.lines[first:]), proc.text()
    proc.p.send_signal(signal.SIGHUP)  # shown again, and the process goes on
    assert _until(lambda: sum(ln == banner[0] for ln in proc.lines) == 2), proc.text()
    assert proc.p.poll() is None
    status = subprocess.run(
        [sys.executable, "-m", "stripesync", "status", "--database-url", database_url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    head = status.stdout.splitlines()[: len(banner) + 1]
    assert head[0].startswith(f"stripesync (pid {proc.p.pid}, running) said when ready at ")
    assert [ln.strip() for ln in head[1:]] == banner
    assert proc.stop(signal.SIGINT) == 0
    status = subprocess.run(
        [sys.executable, "-m", "stripesync", "status", "--database-url", database_url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert status.stdout.startswith(f"stripesync (pid {proc.p.pid}, no longer running)")
