"""A stateful stand-in for the Stripe API, served over HTTP, that the official `stripe`
SDK uses unchanged.

    from stripesync.emulator import EmulatorServer
    with EmulatorServer() as srv:                      # 127.0.0.1, a free port
        client = stripe.StripeClient("sk_test_x", base_addresses={"api": srv.url})
        srv.client().advance(3600)                      # drive the /_emulator/ controls

`Emulator` is the state and the request logic (no I/O), `EmulatorApp` its ASGI app,
`EmulatorServer` runs it in a thread, `EmulatorClient` drives the controls.
"""

from stripesync.emulator.app import EmulatorApp
from stripesync.emulator.controls import Config
from stripesync.emulator.engine import Emulator, Request, Response
from stripesync.emulator.server import EmulatorClient, EmulatorServer

__all__ = [
    "Config",
    "Emulator",
    "EmulatorApp",
    "EmulatorClient",
    "EmulatorServer",
    "Request",
    "Response",
]
