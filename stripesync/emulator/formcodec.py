"""Stripe's form encoding: `a[b][c]=1`, `items[0][price]=p`, `expand[]=x`.

`decode()` turns the key/value pairs of a query string or an
`application/x-www-form-urlencoded` body into nested dicts. Keys whose segments are all
indexes (`[0]`, `[1]`, `[]`) become an `Indexed` dict: whether it is a list or a map
with numeric keys (`metadata[0]=x`) is decided later, against the parameter's type.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from stripesync.emulator.errors import StripeError

_SEGMENT = re.compile(r"\[([^\[\]]*)\]")


class Indexed(dict):  # type: ignore[type-arg]
    """A dict built from `[0]` / `[]` segments: a list unless the type says map."""

    def as_list(self) -> list[Any]:
        return [self[k] for k in sorted(self, key=_index_key)]


def _index_key(k: str) -> int:
    try:
        return int(k)
    except ValueError:
        return 1 << 62


def _split(key: str) -> list[str]:
    bracket = key.find("[")
    if bracket < 0:
        return [key]
    head = key[:bracket]
    rest = key[bracket:]
    parts = [head]
    pos = 0
    for m in _SEGMENT.finditer(rest):
        if m.start() != pos:
            raise _malformed(key)
        parts.append(m.group(1))
        pos = m.end()
    if pos != len(rest) or not head:
        raise _malformed(key)
    return parts


def _malformed(key: str) -> StripeError:
    return StripeError.invalid(f"Invalid parameter name: {key}", param=key, validation=True)


def parse_query(raw: bytes | str) -> list[tuple[str, str]]:
    if not raw:
        return []
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    try:
        return parse_qsl(text, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise StripeError.invalid(
            "Invalid request: the body could not be decoded as form data.", validation=True
        ) from exc


def decode(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = _split(key)
        node: dict[str, Any] = root
        for i, part in enumerate(parts[:-1]):
            nxt_part = parts[i + 1]
            if part == "" and isinstance(node, Indexed):
                part = str(len(node))
            child = node.get(part)
            if child is None:
                child = Indexed() if (nxt_part == "" or nxt_part.isdigit()) else {}
                node[part] = child
            elif not isinstance(child, dict):
                raise StripeError.invalid(
                    f"Invalid hash: {_display(parts[: i + 1])} was given both a value and "
                    "nested values.",
                    param=_display(parts[: i + 1]),
                    validation=True,
                )
            elif isinstance(child, Indexed) and not (nxt_part == "" or nxt_part.isdigit()):
                # `a[0]=..&a[x]=..`: a map after all
                plain = dict(child)
                node[part] = plain
                child = plain
            node = child
        last = parts[-1]
        if last == "" and isinstance(node, Indexed):
            last = str(len(node))
        if isinstance(node.get(last), dict):
            raise StripeError.invalid(
                f"Invalid hash: {_display(parts)} was given both a value and nested values.",
                param=_display(parts),
                validation=True,
            )
        node[last] = value
    return root


def _display(parts: list[str]) -> str:
    return parts[0] + "".join(f"[{p}]" for p in parts[1:])


def plain(value: Any) -> Any:
    """Indexed dicts to lists, recursively (for values with no declared type)."""
    if isinstance(value, Indexed):
        return [plain(v) for v in value.as_list()]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value
