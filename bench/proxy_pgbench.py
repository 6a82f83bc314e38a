"""Bench: pgbench select-only, straight to PostgreSQL and through the proxy.

Starts an embedded PostgreSQL (fast mode, in a temporary directory) and the proxy in
its own process (`python -m stripesync.proxy.cli`) on a free port, runs `pgbench -i`,
then `pgbench -S` with the same clients straight to the server and through the proxy,
and prints both TPS figures and their ratio (target: the proxy reaches at least 70 % of
the direct TPS; issue 5, item 2).

It also measures the physical limit of any relay on this machine: ``floor_relay.c``
(compiled here with ``cc``), one epoll loop that copies bytes both ways and does
nothing else, in as many processes as the proxy has workers. The proxy's share of that
floor says how much of the remaining gap is the proxy's own work and how much is the
two extra socket hops the kernel charges to every round trip.

    python bench/proxy_pgbench.py [--clients 1,2,4,8] [--jobs 2] [--seconds 10]
        [--scale 1] [--workers 1] [--upstream tcp|unix]
        [--protocol simple|extended|prepared] [--rounds 1] [--no-floor] [--bare-relay]

``--clients`` takes a list: one row per client count; ``--jobs`` is pgbench's threads
(at most the clients); ``--workers`` is the proxy's processes; ``--upstream`` is how the
proxy and the floor relay reach the server (pgbench always uses TCP); ``--rounds N``
alternates the runs N times and reports medians; ``--bare-relay`` also measures an
asyncio relay that copies bytes without looking at them (Python's own floor).
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


def start_proxy(
    database_url: str, *flags: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], int]:
    """`stripesync proxy` in its own process on a free port (secrets in `env`)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "stripesync.proxy.cli", "--proxy-listen", "127.0.0.1:0", *flags],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {}), "DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"},
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


def build_floor_relay(directory: Path) -> Path | None:
    """Compile floor_relay.c; None when this machine has no C compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    binary = directory / "floor_relay"
    source = Path(__file__).with_name("floor_relay.c")
    subprocess.run([compiler, "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def start_floor_relay(
    binary: Path, port: int, socket_dir: Path | None, workers: int = 1
) -> tuple[subprocess.Popen[str], int]:
    args = [str(binary), "-w", str(workers), str(port)]
    args += [str(socket_dir)] if socket_dir is not None else []
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
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
    parser.add_argument("--clients", "-c", default="8", help="a count or a list: 1,2,4,8")
    parser.add_argument("--jobs", "-j", type=int, default=2)
    parser.add_argument("--seconds", "-T", type=int, default=10)
    parser.add_argument("--scale", "-s", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--upstream", choices=("tcp", "unix"), default="tcp")
    parser.add_argument("--protocol", choices=("simple", "extended", "prepared"), default="simple")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-floor", action="store_true")
    parser.add_argument("--bare-relay", action="store_true")
    parser.add_argument("--serve-bare-relay", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare_relay:
        asyncio.run(serve_bare_relay("127.0.0.1", args.serve_bare_relay))
        return
    client_counts = [int(c) for c in str(args.clients).split(",")]

    parent = Path(tempfile.mkdtemp(prefix="stripesync-bench-"))
    server = EmbeddedPostgres(parent / "pg", port=0, fast=True)
    procs: list[subprocess.Popen[str]] = []
    try:
        server.start()
        assert server.port is not None
        pgbench(["-i", "-q", "-s", str(args.scale)], server.port, server.password)
        unix = args.upstream == "unix"
        upstream = server.socket_url if unix else server.tcp_url
        proxy, proxy_port = start_proxy(upstream, "--workers", str(args.workers))
        procs.append(proxy)
        targets = {"direct": server.port, "proxy": proxy_port}
        floor = None if args.no_floor else build_floor_relay(parent)
        if floor is not None:
            relay, targets["floor"] = start_floor_relay(
                floor, server.port, server.socket_dir if unix else None, args.workers
            )
            procs.append(relay)
        elif not args.no_floor:
            print("no C compiler (cc): the floor relay is not measured")
        if args.bare_relay:
            bare, targets["bare"] = start_bare_relay(server.port)
            procs.append(bare)
        print(
            f"pgbench -S -M {args.protocol} -T {args.seconds} (scale {args.scale}),"
            f" proxy: {args.workers} worker(s), upstream over {args.upstream};"
            f" {args.rounds} round(s), medians; {os.cpu_count()} cores"
        )
        names = list(targets)
        header = f"{'clients':>7}  " + "  ".join(f"{n + ' tps':>11}" for n in names)
        header += f"  {'proxy/direct':>12}"
        if "floor" in targets:
            header += f"  {'floor/direct':>12}  {'proxy/floor':>11}"
        print(header)
        verdicts = []
        for clients in client_counts:
            run = ["-S", "-M", args.protocol, "-c", str(clients), "-j",
                   str(min(args.jobs, clients)), "-T", str(args.seconds)]
            got: dict[str, list[float]] = {n: [] for n in names}
            for _ in range(args.rounds):
                for name, port in targets.items():
                    try:
                        got[name].append(tps(pgbench(run, port, server.password)))
                    except SystemExit as exc:
                        raise SystemExit(f"{name}, {clients} clients: {exc}") from None
            med = {n: statistics.median(v) for n, v in got.items()}
            ratio = med["proxy"] / med["direct"]
            verdicts.append(ratio >= TARGET)
            row = f"{clients:>7}  " + "  ".join(f"{med[n]:>11.0f}" for n in names)
            row += f"  {ratio:>12.2f}"
            if "floor" in med:
                row += f"  {med['floor'] / med['direct']:>12.2f}"
                row += f"  {med['proxy'] / med['floor']:>11.2f}"
            print(row, flush=True)
        met = "met" if all(verdicts) else "not met"
        print(f"target proxy/direct >= {TARGET:.2f}: {met}")
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.stop()
        shutil.rmtree(parent, ignore_errors=True)


if __name__ == "__main__":
    main()
