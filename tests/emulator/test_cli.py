"""`stripesync emulator` prints one line when ready and serves the API."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx


def test_cli_starts_and_serves():
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stripesync",
            "emulator",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--rate-limit",
            "100",
            "--latency-ms",
            "1",
            "--seed-customers",
            "25",
            "--seed",
            "3",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ")
        r = httpx.get(
            f"{url}/v1/customers",
            params={"limit": 100},
            headers={"Authorization": "Bearer sk_test_cli"},
        )
        assert r.status_code == 200
        assert len(r.json()["data"]) == 25
        cfg = httpx.get(f"{url}/_emulator/config").json()
        assert cfg["rate_limit"] == 100 and cfg["latency_ms"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
