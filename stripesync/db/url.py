"""A database URL checked before anything connects with it, in words a user can act on.

libpq's own messages name what its parser tripped on (``missing "=" after "not" in
connection info string``) or what the resolver said (``Servname not supported for
ai_socktype`` for a port that is not a number). :func:`check_database_url` says instead
what is wrong and which forms are expected; it never repeats the password.
"""

from __future__ import annotations

import re

import psycopg
from psycopg.conninfo import conninfo_to_dict

__all__ = ["FORMS", "check_database_url", "without_password"]

FORMS = (
    "postgresql://USER:PASSWORD@HOST:PORT/DATABASE (the password, port and database may be "
    "left out) or libpq key=value pairs (host=HOST port=5432 dbname=DATABASE user=USER)"
)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_PASSWORD_IN_URL = re.compile(r"(://[^:/@]*:)[^@]*@")
_PASSWORD_PAIR = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def without_password(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    url = _PASSWORD_IN_URL.sub(r"\1***@", url)
    return _PASSWORD_PAIR.sub(r"\1***", url)


def check_database_url(url: str) -> None:
    """Raise ValueError saying what is wrong with ``url`` (None when it can be used)."""
    shown = without_password(url)
    if not url.strip():
        raise ValueError(f"the database URL is empty: expected {FORMS}")
    scheme = _SCHEME.match(url)
    if scheme is not None and scheme.group(1).lower() not in ("postgresql", "postgres"):
        raise ValueError(
            f"the database URL {shown!r} is not a PostgreSQL URL (scheme "
            f"{scheme.group(1)!r}): expected {FORMS}"
        )
    if scheme is None and "=" not in url:
        raise ValueError(f"the database URL {shown!r} is neither a URL nor key=value pairs: "
                         f"expected {FORMS}")  # fmt: skip
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as e:
        reason = str(e).split("\n", 1)[0].removeprefix("invalid connection option ")
        reason = reason.replace(url, shown) if url != shown else reason
        raise ValueError(
            f"the database URL {shown!r} cannot be read ({reason}): expected {FORMS}"
        ) from None
    for port in str(params.get("port") or "").split(","):
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(
                f"the database URL {shown!r} has port {port!r}: a port is a number from 1 to "
                f"65535 (postgresql://HOST:5432/DATABASE)"
            )
