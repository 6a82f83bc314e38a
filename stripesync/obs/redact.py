"""Masking secrets in any text that leaves the process: logs, errors, pages, metrics."""

from __future__ import annotations

import re

# Stripe keys and webhook secrets
_SECRET = re.compile(r"\b([sr]k|whsec|pk)_(live|test)_[A-Za-z0-9*]+|\bwhsec_[A-Za-z0-9]+")
# postgresql://user:password@host  and  password=... in a connection string
_URL_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]+:)[^@\s]+@")
_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)


# secrets with no recognisable shape (an HTTP token), given by the settings
_REMEMBERED: set[str] = set()
MIN_REMEMBERED = 6  # shorter values would mask ordinary words


def remember(secret: str) -> None:
    """Mask this exact value from now on, wherever it appears."""
    if len(secret) >= MIN_REMEMBERED:
        _REMEMBERED.add(secret)


def redact(text: str) -> str:
    """Mask anything that looks like a Stripe secret or a database password."""
    for secret in _REMEMBERED:
        if secret in text:
            text = text.replace(secret, "***")
    text = _SECRET.sub(lambda m: m.group(0)[:8] + "…", text)
    text = _URL_PASSWORD.sub(r"\1***@", text)
    return _KV_PASSWORD.sub(r"\1***", text)
