"""Extra proxy processes on the same port, so that the relay is not held to one core.

One Python process relays what one core can (a few tens of thousands of round trips a
second). :class:`ProxyWorkers` starts workers ``1 … count-1`` as child processes
(``python -m stripesync.proxy.cli --worker i/count``), each a full proxy with its own
upstream connections, write handler, Stripe client and store pool; the calling process
serves as worker 0. All listen on one port with ``SO_REUSEPORT`` and the kernel spreads
new connections over them. Cancel requests find their worker through the Unix sockets
in ``peer_dir`` (see :mod:`stripesync.proxy.server`).

- **Secrets** reach a worker through its environment (``DATABASE_URL``,
  ``STRIPE_API_KEY``), never its command line, which any local user can read.
- **Rate limit.** Each process has its own limiter: a worker gets ``max_rps / count``.
- **Lifetime.** A worker that exits on its own is started again (its sessions are lost,
  as they would be with a crashed PostgreSQL backend) after a pause that doubles up to
  30 s. A worker ends when its parent closes its stdin, or dies: no orphans.
- **Metrics.** A worker sends each proxy write it records (collection, outcome,
  seconds) to the first process as a datagram on ``peer_dir/metrics.sock``, so the
  first process's ``/metrics`` counts the writes of every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from stripesync.obs.metrics import record_proxy_write, send_proxy_writes_to

__all__ = ["ProxyWorkers", "WorkerSettings", "forward_proxy_writes", "worker_count"]

log = logging.getLogger("stripesync.proxy")

MAX_WORKERS = 256
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
RESTART_DELAY_S = 0.5
RESTART_DELAY_MAX_S = 30.0
READY_PREFIX = "proxy listening on "


def worker_count(value: object) -> int:
    """A number of proxy processes, from a flag, the environment or a file (ValueError)."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"expected a whole number of workers, got {value!r}")
    try:
        count = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ValueError(f"expected a number of workers, got {value!r}") from None
    if not 1 <= count <= MAX_WORKERS:
        raise ValueError(f"workers must be between 1 and {MAX_WORKERS}, got {count}")
    return count


def metrics_socket(peer_dir: Path) -> str:
    """Where the first process takes the proxy writes its workers recorded."""
    return str(peer_dir / "metrics.sock")


class _ProxyWriteSink(asyncio.DatagramProtocol):
    """The first process's end: each datagram is one worker's proxy write."""

    def datagram_received(self, data: bytes, addr: object) -> None:
        try:
            collection, outcome, seconds = json.loads(data)
            record_proxy_write(str(collection), str(outcome), float(seconds))
        except (ValueError, TypeError):
            log.debug("ignored a malformed proxy-write report from a worker")


def forward_proxy_writes(peer_dir: Path) -> Callable[[], None]:
    """In a worker: send the proxy writes to the first process; returns the closer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    target = metrics_socket(peer_dir)

    def send(collection: str, outcome: str, seconds: float) -> None:
        with contextlib.suppress(OSError):  # the first process is gone or busy: dropped
            sock.sendto(json.dumps([collection, outcome, seconds]).encode(), target)

    send_proxy_writes_to(send)

    def close() -> None:
        send_proxy_writes_to(None)
        sock.close()

    return close


class WorkerError(RuntimeError):
    """A worker did not start."""


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What every worker is started with (the secrets go through the environment)."""

    database_url: str = field(repr=False)
    schema: str = "stripe"
    api_key: str | None = field(default=None, repr=False)
    api_base: str | None = None
    max_rps: float | None = None  # each worker's own share
    tls_cert: str | None = None
    tls_key: str | None = None
    log_format: str = "text"
    log_level: str = "info"


class ProxyWorkers:
    """Workers ``1 … count-1`` of a proxy whose worker 0 is the calling process."""

    def __init__(
        self,
        count: int,
        *,
        listen_host: str,
        listen_port: int,
        peer_dir: Path,
        settings: WorkerSettings,
    ) -> None:
        if count < 1:
            raise ValueError("a proxy needs at least one worker")
        if listen_port == 0:
            raise ValueError("workers join worker 0's port: start it first")
        self.count = count
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.peer_dir = peer_dir
        self.settings = settings
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._sink: asyncio.BaseTransport | None = None
        self.restarts = 0

    def command(self, worker: int) -> list[str]:
        s = self.settings
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        cmd = [
            sys.executable,
            "-m",
            "stripesync.proxy.cli",
            "--proxy-listen",
            f"{host}:{self.listen_port}",
            "--worker",
            f"{worker}/{self.count}",
            "--peer-dir",
            str(self.peer_dir),
            "--schema",
            s.schema,
            "--log-format",
            s.log_format,
            "--log-level",
            s.log_level,
        ]
        if s.api_base:
            cmd += ["--api-base", s.api_base]
        if s.max_rps is not None:
            cmd += ["--max-rps", repr(s.max_rps)]
        if s.tls_cert and s.tls_key:
            cmd += ["--tls-cert", s.tls_cert, "--tls-key", s.tls_key]
        return cmd

    def environment(self) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "STRIPE_API_KEY")
        }
        env["DATABASE_URL"] = self.settings.database_url
        if self.settings.api_key:
            env["STRIPE_API_KEY"] = self.settings.api_key
        env["PYTHONUNBUFFERED"] = "1"
        return env

    @property
    def pids(self) -> dict[int, int]:
        """Each running worker's process id, by worker number."""
        return {i: p.pid for i, p in self._procs.items() if p.returncode is None}

    async def start(self) -> None:
        """Start every worker and wait until each listens; WorkerError if one does not."""
        path = metrics_socket(self.peer_dir)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._sink, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            _ProxyWriteSink, local_addr=path, family=socket.AF_UNIX
        )
        try:
            for worker in range(1, self.count):
                await self._start(worker)
        except BaseException:
            await self.stop()
            raise
        for worker in range(1, self.count):
            task = asyncio.get_running_loop().create_task(self._watch(worker))
            self._watchers.add(task)
            task.add_done_callback(self._watchers.discard)

    async def _start(self, worker: int) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self.command(worker),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=self.environment(),
        )
        self._procs[worker] = proc
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT_S)
        except TimeoutError:
            line = b""
        if not line.decode(errors="replace").startswith(READY_PREFIX):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            code = await proc.wait()
            raise WorkerError(f"proxy worker {worker} did not start (exit status {code})")

    async def _watch(self, worker: int) -> None:
        delay = RESTART_DELAY_S
        while True:
            proc = self._procs[worker]
            assert proc.stdout is not None
            await proc.stdout.read()  # nothing more comes before it exits
            code = await proc.wait()
            if self._stopping:
                return
            log.warning(
                "proxy worker %d exited (status %s): starting it again in %.1f s",
                worker, code, delay,
            )
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                await self._start(worker)
            except WorkerError as exc:
                log.error("%s", exc)
                delay = min(delay * 2, RESTART_DELAY_MAX_S)
                continue
            self.restarts += 1
            delay = RESTART_DELAY_S

    async def stop(self) -> None:
        """Stop every worker: SIGTERM, then SIGKILL after a grace period."""
        self._stopping = True
        for task in list(self._watchers):
            task.cancel()
        procs = [p for p in self._procs.values() if p.returncode is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self._procs.clear()
        if self._sink is not None:
            self._sink.close()
            self._sink = None
