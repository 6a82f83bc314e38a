"""Running the emulator: in a background thread (tests) or in the foreground (CLI),
and `EmulatorClient`, a small driver for the `/_emulator/` controls."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import uvicorn

from stripesync.emulator.app import EmulatorApp
from stripesync.emulator.controls import Config
from stripesync.emulator.engine import Emulator


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit it: without it, a response written in two parts
    # (head, body) waits for the client's delayed ACK (~40 ms per request)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _uvicorn_config(app: EmulatorApp, log_level: str) -> uvicorn.Config:
    kwargs: dict[str, Any] = {
        "log_level": log_level,
        "lifespan": "on",  # starts and stops webhook delivery (webhooks.py)
        "access_log": False,
        "timeout_graceful_shutdown": 1,
        "timeout_keep_alive": 30,
        "date_header": False,  # the app dates its responses by the emulator's clock
    }
    with contextlib.suppress(ImportError):
        import httptools  # noqa: F401

        kwargs["http"] = "httptools"
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: F401

        kwargs["loop"] = "uvloop"
    return uvicorn.Config(app, **kwargs)


class EmulatorServer:
    """The emulator over HTTP on 127.0.0.1 and a free port, in a background thread.

    >>> with EmulatorServer() as srv:
    ...     stripe.StripeClient("sk_test_x", base_addresses={"api": srv.url})
    """

    def __init__(
        self,
        emulator: Emulator | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
    ) -> None:
        self.emulator = emulator or Emulator(Config())
        self.app = EmulatorApp(self.emulator)
        self.host = host
        self._sock = bind(host, port)
        self.port: int = self._sock.getsockname()[1]
        self._server = uvicorn.Server(_uvicorn_config(self.app, log_level))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> EmulatorServer:
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            daemon=True,
            name="stripesync-emulator",
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the emulator did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._sock.close()

    def client(self) -> EmulatorClient:
        return EmulatorClient(self.url)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(
    emulator: Emulator,
    host: str,
    port: int,
    *,
    ready: Callable[[str], None] | None = None,
    log_level: str = "warning",
) -> None:
    """Serve in the foreground; `ready(url)` once the socket accepts connections."""
    sock = bind(host, port)
    app = EmulatorApp(emulator)
    server = uvicorn.Server(_uvicorn_config(app, log_level))
    bound = sock.getsockname()[1]

    async def main() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        for _ in range(3000):  # up to 30 s
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if server.started and ready is not None:
            shown = f"[{host}]" if ":" in host else host
            ready(f"http://{shown}:{bound}")
        await task

    config = server.config
    if config.loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


class EmulatorClient:
    """Drives the controls of a running emulator over HTTP."""

    def __init__(self, url: str, *, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=timeout)

    def control(self, method: str, name: str, body: Any = None, **query: Any) -> Any:
        r = self.http.request(method, f"/_emulator/{name}", json=body, params=query or None)
        if r.status_code >= 400:
            raise RuntimeError(f"/_emulator/{name}: {r.status_code} {r.text}")
        return r.json()

    def reset(self) -> None:
        self.control("POST", "reset")

    def configure(self, **values: Any) -> dict[str, Any]:
        return self.control("POST", "config", values)  # type: ignore[no-any-return]

    def advance(self, seconds: float) -> int:
        return int(self.control("POST", "clock", {"advance": seconds})["now"])

    def skew(self, seconds: float) -> int:
        """Set the emulator's clock to the machine's plus ``seconds`` (either sign)."""
        return int(self.control("POST", "clock", {"skew": seconds})["now"])

    def now(self) -> int:
        return int(self.control("GET", "clock")["now"])

    def fault(self, kind: str, path: str = "*", **rule: Any) -> dict[str, Any]:
        return self.control("POST", "faults", {"kind": kind, "path": path, **rule})  # type: ignore[no-any-return]

    def clear_faults(self) -> None:
        self.control("DELETE", "faults")

    def restrict(self, key: str, permissions: dict[str, str]) -> None:
        self.control("POST", "restricted_keys", {"key": key, "permissions": permissions})

    def load(self, objects: list[dict[str, Any]], *, events: bool = False) -> dict[str, Any]:
        q = {"events": "true"} if events else {}
        return self.control("POST", "load", objects, **q)  # type: ignore[no-any-return]

    def generate(self, **counts: Any) -> dict[str, Any]:
        return self.control("POST", "generate", counts)  # type: ignore[no-any-return]

    def requests(self) -> list[dict[str, Any]]:
        """The latest API requests (method, path, status), oldest first."""
        return list(self.control("GET", "requests"))

    def clear_requests(self) -> None:
        self.control("DELETE", "requests")

    def stats(self) -> dict[str, Any]:
        return self.control("GET", "stats")  # type: ignore[no-any-return]

    def close(self) -> None:
        self.http.close()


@contextlib.contextmanager
def running(emulator: Emulator | None = None) -> Iterator[EmulatorServer]:
    with EmulatorServer(emulator) as srv:
        yield srv
