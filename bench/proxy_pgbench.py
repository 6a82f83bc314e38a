"""Bench: pgbench select-only, straight to PostgreSQL and through the proxy.

Starts an embedded PostgreSQL (fast mode, in a temporary directory) and the proxy in
its own process (`python -m stripesync.proxy.cli`) on a free port, runs `pgbench -i`,
then `pgbench -S` with the same clients straight to the server and through the proxy,
and prints both TPS figures and their ratio (target: the proxy reaches at least 70 % of
the direct TPS; issue 5, item 2).

    python bench/proxy_pgbench.py [--clients 8] [--jobs 2] [--seconds 10] [--scale 1]
        [--upstream tcp|unix] [--protocol simple|extended|prepared] [--rounds 1] [--bare-relay]

``--upstream`` is how the proxy reaches the server (pgbench always uses TCP);
``--rounds N`` alternates direct and proxied runs N times and reports the medians;
``--bare-relay`` also measures the floor of any asyncio relay: a few lines that copy
bytes both ways without looking at them (no protocol, no TLS, no cancel).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from stripesync.db.embedded import EmbeddedPostgres, pg_bin_dir

TARGET = 0.70


def start_proxy(database_url: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stripesync.proxy.cli",
            "--proxy-listen",
            "127.0.0.1:0",
            "--database-url",
            database_url,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    match = re.fullmatch(r"proxy listening on 127\.0\.0\.1:(\d+)", line)
    if match is None:
        proc.kill()
        raise SystemExit(f"proxy did not start: {line!r}")
    return proc, int(match.group(1))


class _Pipe(asyncio.Protocol):
    """One direction of the bare relay."""

    def __init__(self, peer: asyncio.Transport | None = None) -> None:
        self.peer = peer
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self.early.append(data)
        else:
            self.peer.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.peer.close()


async def serve_bare_relay(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def accept() -> _Pipe:
        down = _Pipe()

        async def connect() -> None:
            up, _ = await loop.create_connection(lambda: _Pipe(down.transport), host, port)
            down.peer = up
            for data in down.early:
                up.write(data)

        task = loop.create_task(connect())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return down

    server = await loop.create_server(accept, "127.0.0.1", 0)
    print(f"bare relay on {server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


def start_bare_relay(port: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-bare-relay", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline().split()[-1])


def pgbench(args: list[str], port: int, password: str) -> str:
    cmd = [str(pg_bin_dir() / "pgbench"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
    env = {**os.environ, "PGPASSWORD": password, "PGSSLMODE": "disable"}
    done = subprocess.run([*cmd, *args, "postgres"], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"pgbench failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def tps(output: str) -> float:
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", output)
    if match is None:
        raise SystemExit(f"no tps in pgbench output:\n{output}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", "-c", type=int, default=8)
    parser.add_argument("--jobs", "-j", type=int, default=2)
    parser.add_argument("--seconds", "-T", type=int, default=10)
    parser.add_argument("--scale", "-s", type=int, default=1)
    parser.add_argument("--upstream", choices=("tcp", "unix"), default="tcp")
    parser.add_argument("--protocol", choices=("simple", "extended", "prepared"), default="simple")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--bare-relay", action="store_true")
    parser.add_argument("--serve-bare-relay", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare_relay:
        asyncio.run(serve_bare_relay("127.0.0.1", args.serve_bare_relay))
        return

    parent = Path(tempfile.mkdtemp(prefix="stripesync-bench-"))
    server = EmbeddedPostgres(parent / "pg", port=0, fast=True)
    proxy: subprocess.Popen[str] | None = None
    bare: subprocess.Popen[str] | None = None
    try:
        server.start()
        assert server.port is not None
        pgbench(["-i", "-q", "-s", str(args.scale)], server.port, server.password)
        upstream = server.tcp_url if args.upstream == "tcp" else server.socket_url
        proxy, proxy_port = start_proxy(upstream)
        run = [
            "-S",
            "-M",
            args.protocol,
            "-c",
            str(args.clients),
            "-j",
            str(args.jobs),
            "-T",
            str(args.seconds),
        ]
        bare_port = 0
        if args.bare_relay:
            bare, bare_port = start_bare_relay(server.port)
        direct: list[float] = []
        proxied: list[float] = []
        relayed: list[float] = []
        for _ in range(args.rounds):
            direct.append(tps(pgbench(run, server.port, server.password)))
            proxied.append(tps(pgbench(run, proxy_port, server.password)))
            if bare is not None:
                relayed.append(tps(pgbench(run, bare_port, server.password)))
        d = statistics.median(direct)
        p = statistics.median(proxied)
        print(
            f"pgbench -S -M {args.protocol} -c {args.clients} -j {args.jobs} -T {args.seconds}"
            f" (scale {args.scale}, proxy upstream over {args.upstream},"
            f" {args.rounds} round(s), medians)"
        )
        print(f"direct:        {d:10.0f} tps   {[round(x) for x in direct]}")
        print(f"through proxy: {p:10.0f} tps   {[round(x) for x in proxied]}")
        verdict = "ok" if p / d >= TARGET else "below target"
        print(f"ratio:         {p / d:10.2f}       (target >= {TARGET:.2f}: {verdict})")
        if relayed:
            r = statistics.median(relayed)
            print(f"bare relay:    {r:10.0f} tps   {[round(x) for x in relayed]}")
            print(f"bare ratio:    {r / d:10.2f}       (TCP upstream, nothing parsed)")
    finally:
        if bare is not None:
            bare.kill()
            bare.wait()
        if proxy is not None:
            proxy.terminate()
            try:
                proxy.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proxy.kill()
        server.stop()
        shutil.rmtree(parent, ignore_errors=True)


if __name__ == "__main__":
    main()
