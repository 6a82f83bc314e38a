"""pytest plugin: the Stripe emulator over real HTTP.

- `emulator_server` (session): one `EmulatorServer` on 127.0.0.1 and a free port.
- `emulator` (function): the same server, reset to a blank account; an
  `EmulatorHandle` with `.url`, `.controls` (an `EmulatorClient`), `.state` (the
  in-process `Emulator`, for assertions) and `.stripe()` (a configured SDK client).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from stripesync.emulator import Emulator, EmulatorClient, EmulatorServer


class EmulatorHandle:
    def __init__(self, server: EmulatorServer, controls: EmulatorClient) -> None:
        self.server = server
        self.url = server.url
        self.controls = controls
        self.state: Emulator = server.emulator

    def stripe(self, key: str = "sk_test_emulator", **options: Any) -> stripe.StripeClient:
        options.setdefault("max_network_retries", 0)
        return stripe.StripeClient(key, base_addresses={"api": self.url}, **options)

    def async_stripe(self, key: str = "sk_test_emulator", **options: Any) -> stripe.StripeClient:
        options.setdefault("max_network_retries", 0)
        return stripe.StripeClient(
            key, base_addresses={"api": self.url}, http_client=stripe.HTTPXClient(), **options
        )

    # shortcuts to the controls
    def advance(self, seconds: float) -> int:
        return self.controls.advance(seconds)

    def load(self, objects: list[dict[str, Any]], *, events: bool = False) -> dict[str, Any]:
        return self.controls.load(objects, events=events)


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    with EmulatorServer() as srv:
        yield srv


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> Iterator[EmulatorHandle]:
    controls = emulator_server.client()
    controls.reset()
    try:
        yield EmulatorHandle(emulator_server, controls)
    finally:
        controls.reset()
        controls.close()
