"""The `/_emulator/` control endpoints (JSON in, JSON out, no auth).

- `GET /_emulator/health`: `{"ok": true}`.
- `GET`, `POST /_emulator/config`: read / change `latency_ms`, `latency_jitter_ms`,
  `rate_limit`, `max_body_bytes`, `hang_seconds`, `default_api_version`,
  `allowed_keys`, `event_retention_days`, `webhooks` (delivery on/off) and
  `webhook_max_attempts`, `webhook_retry_seconds`, `webhook_retry_max_seconds`,
  `webhook_timeout_seconds`.
- `POST /_emulator/reset`: forget every object, event, fault, key and clock offset;
  the config goes back to what the emulator started with.
- `GET`, `POST`, `DELETE /_emulator/faults`: list / add / clear injected failures,
  e.g. `{"kind": "500", "path": "/v1/customers*", "method": "GET", "nth": 3}` or
  `"rate": 0.5`, optionally `"times": N`; kinds 500, 503, 429, reset, timeout.
- `POST`, `DELETE /_emulator/restricted_keys`:
  `{"key": "rk_test_…", "permissions": {"customer": "read", "*": "none"}}`.
- `GET`, `POST /_emulator/clock`: `{"now": …}` / `{"advance": seconds}` or
  `{"set": unix time}` (forward only), or `{"skew": seconds}`: the emulator's clock is
  the machine's plus this, either sign (a Stripe whose clock differs from the sync's;
  moving it back makes later objects look older). Responses carry it in `Date`.
- `POST /_emulator/load[?events=true]`: a JSON array of Stripe objects.
- `POST /_emulator/generate`: `{"customers": N, "seed": 1, …}` (generator.py).
- `GET /_emulator/stats`: object counts per collection, API answers by status, webhook
  deliveries (`webhooks`: attempted, delivered, failed, retried, abandoned, dropped,
  pending). `POST /_emulator/config {"webhooks": false}` turns delivery off.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from stripesync.emulator.load import LoadError, load_objects

if TYPE_CHECKING:
    from stripesync.emulator.engine import Emulator


class Controls:
    def __init__(self, em: Emulator) -> None:
        self.em = em

    def handle(self, method: str, path: str, query: bytes, body: bytes) -> tuple[int, bytes]:
        name = path[len("/_emulator/") :].strip("/")
        try:
            data: Any = json.loads(body) if body.strip() else {}
        except ValueError:
            return _err(400, "body is not valid JSON")
        q = {k: v[-1] for k, v in parse_qs(query.decode("latin-1")).items()}
        fn = getattr(self, f"_{name}", None)
        if fn is None:
            return _err(404, f"no control {name!r}")
        try:
            status, out = fn(method, data, q)
        except (ValueError, TypeError, LoadError) as exc:
            return _err(400, str(exc))
        return status, json.dumps(out).encode()

    def _health(self, method: str, data: Any, q: dict[str, str]) -> tuple[int, Any]:
        return 200, {"ok": True}

    def _config(self, method: str, data: Any, q: dict[str, str]) -> tuple[int, Any]:
        if method == "POST":
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            self.em.config.update(data)
        return 200, self.em.config.as_dict()

    def _reset(self, method: str, data: Any, q: dict[str, str]) -> tuple[int, Any]:
        self.em.reset()
        return 200, {"ok": True}

    def _faults(self, method: str, data: Any, q: dict[str, str]) -> tuple[int, Any]:
        faults = self.em.faults
        if method == "POST":
            rules = data if isinstance(data, list) else [data]
            added = [faults.add(r).as_dict() for r in rules]
            return 200, added if isinstance(data, list) else added[0]
        if method == "DELETE":
            faults.clear()
        return 200, [r.as_dict() for r in faults.rules]

    def _restricted_keys(self, method: str, data: Any, q: dict[str, str]) -> tuple[int, Any]:
        perms = self.em.permissions
        if method == "POST":
            key = data.get("key")
            if not isinstance(key, str) or not key.startswith("rk_"):
                raise ValueError("key must be a restricted key (rk_test_…)")
            perms.set(key, data.get("permissions") or {})
        elif method == "DELETE":
            perms.keys.clear()
        return 200, perms.keys

    def _clock(self, method: str, data: Any, q: dict[str, str]) -> tuple[int, Any]:
        clock = self.em.clock
        if method == "POST":
            if "advance" in data:
                clock.advance(float(data["advance"]))
            elif "set" in data:
                clock.set(float(data["set"]))
            elif "skew" in data:
                clock.offset = float(data["skew"])
            else:
                raise ValueError(
                    "expected {'advance': seconds}, {'set': unix time} or {'skew': seconds}"
                )
        return 200, {"now": clock.now(), "offset": clock.offset}

    def _load(self, method: str, data: Any, q: dict[str, str]) -> tuple[int, Any]:
        if method != "POST":
            raise ValueError("POST a JSON array of Stripe objects")
        events = q.get("events", "").lower() in ("1", "true", "yes")
        counts = load_objects(self.em, data, events=events)
        return 200, {"loaded": sum(counts.values()), "by_object": counts}

    def _generate(self, method: str, data: Any, q: dict[str, str]) -> tuple[int, Any]:
        from stripesync.emulator.generator import generate

        if method != "POST" or not isinstance(data, dict):
            raise ValueError('POST a JSON object of counts, e.g. {"customers": 1000}')
        return 200, generate(self.em, **data)

    def _requests(self, method: str, data: Any, q: dict[str, str]) -> tuple[int, Any]:
        """The latest API requests, oldest first (DELETE empties the log): method, path,
        query string, status, the ids a list page served (`listed`) and when it was answered
        (`at`, monotonic seconds)."""
        if method == "DELETE":
            self.em.requests.clear()
            return 200, []
        return 200, [
            {"method": r.method, "path": r.path, "query": r.query, "status": r.status,
             "listed": r.listed, "at": r.at}
            for r in self.em.requests
        ]

    def _stats(self, method: str, data: Any, q: dict[str, str]) -> tuple[int, Any]:
        return 200, {
            "objects": self.em.store.counts(),
            "now": self.em.clock.now(),
            "responses": {str(k): v for k, v in sorted(self.em.responses.items())},
            "webhooks": self.em.webhooks.stats(),
        }


def _err(status: int, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": {"message": message, "type": "emulator_error"}}).encode()
