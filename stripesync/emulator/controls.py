"""What tests and benchmarks can turn: latency, rate limit, injected failures,
restricted keys, accepted keys, the clock."""

from __future__ import annotations

import fnmatch
import random
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

FAULT_KINDS = ("500", "503", "reset", "timeout", "429")


@dataclass
class Config:
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    rate_limit: float = 0.0  # requests per second per key; 0 = off
    max_body_bytes: int = 1 << 20
    hang_seconds: float = 30.0  # how long a "timeout" fault holds the request
    default_api_version: str | None = None  # account default; None = the SDK's
    allowed_keys: list[str] | None = None  # None: any sk_test_ / rk_test_ key
    event_retention_days: int = 30
    # webhook delivery (webhooks.py): off with False; a failed attempt is retried after
    # `webhook_retry_seconds`, doubling up to `webhook_retry_max_seconds`, until
    # `webhook_max_attempts` attempts were made
    webhooks: bool = True
    webhook_max_attempts: int = 8
    webhook_retry_seconds: float = 1.0
    webhook_retry_max_seconds: float = 60.0
    webhook_timeout_seconds: float = 10.0

    def update(self, values: dict[str, Any]) -> None:
        known = asdict(self)
        unknown = set(values) - set(known)
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        for k, v in values.items():
            if isinstance(known[k], bool) and not isinstance(v, bool):
                raise ValueError(f"{k} must be true or false")
        for k, v in values.items():
            setattr(self, k, v)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Clock:
    """Real time plus an offset tests can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> int:
        return int(time.time() + self.offset)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.offset += seconds

    def set(self, ts: float) -> None:
        delta = ts - (time.time() + self.offset)
        if delta < 0:
            raise ValueError("the clock only moves forward")
        self.offset += delta


class RateLimiter:
    """A token bucket per key: `rate` requests per second, bursts up to `rate`."""

    def __init__(self) -> None:
        self.buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, rate: float) -> bool:
        if rate <= 0:
            return True
        now = time.monotonic()
        tokens, last = self.buckets.get(key, (rate, now))
        tokens = min(rate, tokens + (now - last) * rate)
        if tokens < 1.0:
            self.buckets[key] = (tokens, now)
            return False
        self.buckets[key] = (tokens - 1.0, now)
        return True

    def reset(self) -> None:
        self.buckets.clear()


@dataclass
class FaultRule:
    """Fail matching requests: `kind` is 500, 503, 429, reset or timeout.

    `path` is a glob (`/v1/customers*`) or a template (`/v1/customers/{id}`); `method`
    optional. Fires on the `nth` matching request only, or on each with probability
    `rate`; `times` caps how often it fires (None = no cap)."""

    kind: str
    path: str = "*"
    method: str | None = None
    rate: float | None = None
    nth: int | None = None
    times: int | None = None
    id: int = 0
    seen: int = 0
    fired: int = 0
    _regex: re.Pattern[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.kind = str(self.kind)
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}")
        if self.rate is None and self.nth is None:
            self.rate = 1.0
        glob = re.sub(r"\{[^}]+\}", "*", self.path)
        self._regex = re.compile(fnmatch.translate(glob))

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method:
            return False
        assert self._regex is not None
        return bool(self._regex.match(path))

    def fire(self, rng: random.Random) -> bool:
        """Count a matching request; True when it must fail."""
        self.seen += 1
        if self.times is not None and self.fired >= self.times:
            return False
        hit = self.seen == self.nth if self.nth is not None else rng.random() < (self.rate or 0)
        if hit:
            self.fired += 1
        return hit

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "path": self.path,
            "method": self.method,
            "rate": self.rate,
            "nth": self.nth,
            "times": self.times,
            "seen": self.seen,
            "fired": self.fired,
        }


class Faults:
    def __init__(self, seed: int | None = None) -> None:
        self.rules: list[FaultRule] = []
        self.rng = random.Random(seed)
        self._next = 1

    def add(self, spec: dict[str, Any]) -> FaultRule:
        rule = FaultRule(**{k: v for k, v in spec.items() if k in _RULE_FIELDS})
        rule.id = self._next
        self._next += 1
        self.rules.append(rule)
        return rule

    def check(self, method: str, path: str) -> str | None:
        for rule in self.rules:
            if rule.matches(method, path) and rule.fire(self.rng):
                return rule.kind
        return None

    def clear(self) -> None:
        self.rules.clear()


_RULE_FIELDS = {"kind", "path", "method", "rate", "nth", "times"}

READ, WRITE, NONE = "read", "write", "none"


class Permissions:
    """Restricted keys (`rk_test_…`): per collection `read`, `write` or `none`;
    `*` is the default for collections not named (none if absent)."""

    def __init__(self) -> None:
        self.keys: dict[str, dict[str, str]] = {}

    def set(self, key: str, permissions: dict[str, str]) -> None:
        for coll, level in permissions.items():
            if level not in (READ, WRITE, NONE):
                raise ValueError(f"{coll}: permission must be read, write or none")
        self.keys[key] = dict(permissions)

    def allowed(self, key: str, collection: str, write: bool) -> bool:
        perms = self.keys.get(key)
        if perms is None:
            return True  # a restricted key with no configured permissions: all allowed
        level = perms.get(collection, perms.get("*", NONE))
        return level == WRITE or (level == READ and not write)
