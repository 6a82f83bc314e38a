"""`stripesync proxy`: flags, and the command in its own process (signals, cancel)."""

from __future__ import annotations

import argparse
import signal
import subprocess
from collections.abc import Callable

import psycopg
import pytest

from stripesync.proxy import cli
from tests.plugins.postgres import PgServer
from tests.proxy.conftest import ProxyProcess, assert_cancels


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_flags_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db.example/x")
    args = parse(["proxy"])
    assert args.proxy_listen == ("127.0.0.1", 6543)
    assert args.database_url == "postgresql://u@db.example/x"
    assert (args.tls_cert, args.tls_key) == (None, None)
    assert args.run is cli.run
    args = parse(["proxy", "--proxy-listen", "[::1]:7000", "--database-url", "postgresql:///y"])
    assert (args.proxy_listen, args.database_url) == (("::1", 7000), "postgresql:///y")
    assert parse(["proxy", "--proxy-listen", ":0"]).proxy_listen == ("127.0.0.1", 0)
    for bad in ("6543", "host:port", "host:70000"):
        with pytest.raises(SystemExit):
            parse(["proxy", "--proxy-listen", bad])


def test_usage_errors(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert cli.run(parse(["proxy"])) == 2
    assert capsys.readouterr().err == (
        "stripesync proxy: --database-url (or DATABASE_URL) is required\n"
    )
    args = parse(["proxy", "--database-url", "postgresql://u:hunter2@localhost:abc/x"])
    assert cli.run(args) == 2
    err = capsys.readouterr().err
    assert "has port 'abc': a port is a number" in err and "hunter2" not in err
    args = parse(["proxy", "--database-url", "postgresql:///x", "--tls-cert", "/nonexistent.pem"])
    assert cli.run(args) == 2
    assert "go together" in capsys.readouterr().err
    tls = ["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"]
    args = parse(["proxy", "--database-url", "postgresql:///x", *tls])
    assert cli.run(args) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("stripesync proxy: cannot load the TLS certificate") and err.count("\n") == 1
    )


@pytest.fixture
def proxy_process(proxy_command: Callable[..., ProxyProcess]) -> ProxyProcess:
    return proxy_command()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_command_serves_until_a_signal(
    pg_server: PgServer, proxy_process: tuple[subprocess.Popen[str], int], sig: signal.Signals
) -> None:
    proc, port = proxy_process
    url = psycopg.conninfo.make_conninfo(pg_server.admin_url, port=str(port))
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("select 'through the command'").fetchone() == ("through the command",)
        if sig == signal.SIGTERM:
            # libpq's classic, blocking PQcancel (the proxy is in another process here)
            assert_cancels(conn, conn.cancel)
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")  # its session was closed
    assert proc.stderr is not None and proc.stderr.read() == ""
