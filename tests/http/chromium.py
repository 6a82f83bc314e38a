"""Debian's headless Chromium driven over the DevTools protocol on a pipe
(`--remote-debugging-pipe`: fd 3 in, fd 4 out, NUL-separated JSON), with no dependency.

`--window-size` alone cannot show a phone: headless Chromium lays pages out at least
500 px wide. `Emulation.setDeviceMetricsOverride` does lay them out at 390 px, as a phone
does (`mobile` honours the viewport meta tag).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import tempfile
import time
from typing import Any

CHROMIUM = "/usr/bin/chromium"


class ChromiumError(RuntimeError):
    pass


class Chromium:
    """One headless browser and one page; `with Chromium() as c: c.open(url, 390, 844)`."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory(prefix="stripesync-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def fds() -> None:  # in the child: the pipe's ends as fds 3 and 4
            a, b = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--disable-gpu", "--no-sandbox", "--no-first-run",
             "--hide-scrollbars", "--remote-debugging-pipe",
             f"--user-data-dir={self._profile.name}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=fds, close_fds=False,  # fds 3 and 4 are made in the child
            env={**os.environ, "LANG": "C.UTF-8"},
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call(
            "Target.attachToTarget", {"targetId": page["targetId"], "flatten": True}
        )["sessionId"]
        self.call("Page.enable", session=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(ChromiumError, OSError):
            self.call("Browser.close")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_child, self._from_child):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self._profile.cleanup()

    # ---- the protocol ------------------------------------------------------------------

    def call(
        self, method: str, params: dict[str, Any] | None = None, *, session: bool = False
    ) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method,
                                   "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        while True:
            got = self._read()
            if got.get("id") == self._next_id:
                if "error" in got:
                    raise ChromiumError(f"{method}: {got['error']}")
                result: dict[str, Any] = got.get("result", {})
                return result
            self._events.append(got)

    def wait_event(self, method: str) -> dict[str, Any]:
        while True:
            for i, e in enumerate(self._events):
                if e.get("method") == method:
                    del self._events[i]
                    return e
            self._events.append(self._read())

    def _read(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise ChromiumError("no answer from chromium")
            chunk = os.read(self._from_child, 1 << 16)
            if not chunk:
                raise ChromiumError("chromium closed the pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    # ---- what the tests and tools/status_screenshots.py use ------------------------------

    def open(self, url: str, width: int, height: int, *, mobile: bool | None = None) -> None:
        """Load `url` in a `width` x `height` viewport (a phone's below 600 px)."""
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1,
             "mobile": width < 600 if mobile is None else mobile},
            session=True,
        )
        self._events = [e for e in self._events if e.get("method") != "Page.loadEventFired"]
        self.call("Page.navigate", {"url": url}, session=True)
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        got = self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True},
            session=True,
        )
        if "exceptionDetails" in got:
            raise ChromiumError(f"{expression!r}: {got['exceptionDetails']}")
        return got["result"].get("value")

    def screenshot(self, *, full_page: bool = False) -> bytes:
        """The viewport, or the whole page as tall as it is."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.evaluate(
                "[document.documentElement.clientWidth, document.documentElement.scrollHeight]"
            )
            params["captureBeyondViewport"] = True
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
        return base64.b64decode(self.call("Page.captureScreenshot", params, session=True)["data"])
