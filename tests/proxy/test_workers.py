"""Several proxy processes on one port: spread, cancel across workers, restarts, no orphans."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from stripesync.proxy import messages as m
from stripesync.proxy.cli import parse_workers
from tests.plugins.postgres import PgServer
from tests.proxy.conftest import ProxyProcess, RunningProxy, assert_cancels


def children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


def wait_for(check: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def two_workers(proxy_command: Callable[..., ProxyProcess]) -> ProxyProcess:
    return proxy_command("--workers", "2", "--log-level", "info")


def test_workers_flag() -> None:
    assert parse_workers("4") == 4
    for bad in ("0", "-1", "many", "1000"):
        with pytest.raises(Exception, match="workers"):
            parse_workers(bad)


def test_cancel_request_is_handed_to_the_worker_that_issued_the_key(
    pg_server: PgServer, start_proxy: Callable[..., RunningProxy], tmp_path: Path
) -> None:
    first, second = (
        start_proxy(pg_server.admin_url, worker=i, workers=2, peer_dir=tmp_path) for i in (0, 1)
    )
    with psycopg.connect(second.url(pg_server.admin_url), autocommit=True) as conn:
        pid = conn.info.backend_pid
        assert pid % 2 == 1  # the key names its worker

        async def secret() -> bytes:
            key = second.server._by_pid[pid].proxy_key
            assert key is not None
            return key.secret

        key = second.call(secret())

        def cancel_through(proxy: RunningProxy, secret: bytes) -> None:
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
                sock.sendall(m.CancelRequest(pid, secret).encode())
                assert sock.recv(1) == b""  # closed without an answer, as PostgreSQL does

        # the cancel reaches the other worker, which hands it over
        assert_cancels(conn, lambda: cancel_through(first, key))
        # a wrong secret handed over is ignored by the owner
        timer = threading.Timer(0.1, cancel_through, (first, b"\0" * len(key)))
        timer.start()
        assert conn.execute("select 'not cancelled' from pg_sleep(0.5)").fetchone() == (
            "not cancelled",
        )
        timer.join()


def test_two_workers_share_the_port_and_cancel_across_them(
    pg_server: PgServer, two_workers: tuple[subprocess.Popen[str], int]
) -> None:
    proc, port = two_workers
    url = psycopg.conninfo.make_conninfo(pg_server.admin_url, port=str(port))
    conns = [psycopg.connect(url, autocommit=True) for _ in range(16)]
    try:
        # the kernel spreads connections; each key names the worker that serves it
        assert {c.info.backend_pid % 2 for c in conns} == {0, 1}
        for conn in conns[:6]:
            # libpq's blocking PQcancel: a new connection, to whichever worker
            assert_cancels(conn, conn.cancel, delay=0.2)
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        for conn in conns:
            conn.close()

    # a worker that dies is started again
    (worker,) = children(proc.pid)
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: len(children(proc.pid) - {worker}) == 1)
    (restarted,) = children(proc.pid)
    seen: set[int] = set()
    deadline = time.monotonic() + 15
    while seen != {0, 1}:
        assert time.monotonic() < deadline, seen
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("select 'after restart'").fetchone() == ("after restart",)
            seen.add(conn.info.backend_pid % 2)

    # SIGTERM stops every worker
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert not alive(restarted)
    assert proc.stderr is not None
    assert "proxy worker 1 exited" in proc.stderr.read()


def test_workers_end_with_their_parent(
    pg_server: PgServer, two_workers: tuple[subprocess.Popen[str], int]
) -> None:
    proc, _ = two_workers
    (worker,) = children(proc.pid)
    proc.kill()  # no chance to stop its workers
    proc.wait(timeout=10)
    wait_for(lambda: not alive(worker))
