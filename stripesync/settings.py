"""Configuration: a TOML file, environment variables and flags, one table of settings.

Precedence, highest first: a flag on the command line, the environment variable, the
TOML file (`--config`, default `stripesync.toml` in the working directory when it
exists), the built-in default. Keys are the flags' names with `_` (`api_key`,
`max_rps`); unknown keys and bad values are refused with the key (and where it came
from) named. Secrets (API key, webhook secrets, database password) are masked whenever
settings are shown.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stripesync.obs.logs import FORMATS, LEVELS
from stripesync.obs.redact import redact, remember
from stripesync.proxy.workers import worker_count

DEFAULT_FILE = "stripesync.toml"


class ConfigError(ValueError):
    """A bad setting: the message names the key and where it came from."""


def _text(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError("expected text")
    return v


def _positive(v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError("expected a number")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError("expected a number") from None
    if not f > 0:
        raise ValueError("must be positive")
    return f


def _listen(v: Any) -> str:
    s = _text(v).strip()
    if s == "off":
        return s
    host, sep, port = s.rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT or off, got {s!r}")
    return s


def _choice(options: Sequence[str]) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        s = _text(v).lower()
        if s not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {v!r}")
        return s

    return parse


def _collections(v: Any) -> list[str] | None:
    from stripesync.catalog import UnknownCollectionError, build_catalog

    if v is None or v == "":
        return None
    names = [n.strip() for n in (v.split(",") if isinstance(v, str) else v) if str(n).strip()]
    if not all(isinstance(n, str) for n in names):
        raise ValueError("expected collection names")
    try:
        build_catalog().select(names)
    except UnknownCollectionError as e:
        raise ValueError(str(e)) from None
    return names


def _secrets(v: Any) -> list[str]:
    items = v.split(",") if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ValueError("expected a list of secrets")
    return [i.strip() for i in items if i.strip()]


@dataclass(frozen=True)
class Setting:
    key: str
    help: str
    parse: Callable[[Any], Any] = _text
    default: Any = None
    env: str | None = None
    secret: bool = False
    repeat: bool = False  # the flag may be given several times (a list)
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in (
        Setting("api_key", "Stripe secret or restricted key", env="STRIPE_API_KEY", secret=True),
        Setting("api_base", "Stripe API address; default Stripe's own", env="STRIPE_API_BASE"),
        Setting(
            "database_url",
            "PostgreSQL URL; default: an embedded PostgreSQL in the user's data directory",
            env="DATABASE_URL",
            secret=True,
        ),
        Setting("schema", "schema of the synced tables", default="stripe"),
        Setting(
            "data_dir",
            "directory of the embedded PostgreSQL used without a database URL; default: "
            "the user's data directory",
            env="STRIPESYNC_DATA_DIR",
            metavar="DIR",
        ),
        Setting(
            "collections",
            "comma-separated catalog names to sync (default: all)",
            parse=_collections,
        ),
        Setting(
            "max_rps",
            "requests per second to Stripe (default 50 for live keys, 20 for test keys)",
            parse=_positive,
        ),
        Setting("poll_interval", "seconds between event polls", parse=_positive, default=0.5),
        Setting(
            "http_listen",
            "HOST:PORT of the status page, /health, /metrics and /webhooks/stripe; off for none",
            parse=_listen,
            default="127.0.0.1:8484",
            env="STRIPESYNC_HTTP_LISTEN",
        ),
        Setting(
            "http_token",
            "a token the status page and /metrics ask for (Bearer, or Basic with it as "
            "password); /health and /webhooks/stripe stay open",
            env="STRIPESYNC_HTTP_TOKEN",
            secret=True,
        ),
        Setting(
            "webhook_secret",
            "whsec_... of a webhook endpoint that nudges the live sync (repeat for several)",
            parse=_secrets,
            default=[],
            env="STRIPE_WEBHOOK_SECRET",
            secret=True,
            repeat=True,
        ),
        Setting(
            "register_webhook",
            "create or update a Stripe webhook endpoint at URL (the public address of "
            "/webhooks/stripe); its secret is kept in the database (table _secrets, which "
            "only its owner may read)",
            metavar="URL",
        ),
        Setting(
            "relist_interval",
            "seconds between re-lists of what Stripe's events miss",
            parse=_positive,
            default=3600.0,
        ),
        Setting(
            "lag_budget",
            "seconds of staleness before /health answers 503",
            parse=_positive,
            default=10.0,
        ),
        Setting(
            "proxy_listen",
            "HOST:PORT where PostgreSQL clients connect to the write-through proxy; off for none",
            parse=_listen,
            default="127.0.0.1:6543",
            env="STRIPESYNC_PROXY_LISTEN",
        ),
        Setting(
            "proxy_workers",
            "processes sharing the proxy's port (each relays what one core can)",
            parse=worker_count,
            default=1,
            env="STRIPESYNC_PROXY_WORKERS",
        ),
        Setting("tls_cert", "certificate (PEM) the proxy offers to clients"),
        Setting("tls_key", "the certificate's private key (PEM)", secret=True),
        Setting(
            "log_format",
            f"log lines: {' or '.join(FORMATS)}",
            parse=_choice(FORMATS),
            default="text",
            env="STRIPESYNC_LOG_FORMAT",
        ),
        Setting(
            "log_level",
            f"least important log lines shown: {', '.join(LEVELS)}",
            parse=_choice(LEVELS),
            default="info",
            env="STRIPESYNC_LOG_LEVEL",
        ),
    )
}


def add(parser: argparse.ArgumentParser, *keys: str) -> None:
    """Add these settings' flags to a command (their defaults are resolved later)."""
    known = tuple(dict.fromkeys((*getattr(parser, "_stripesync_settings", ()), *keys)))
    parser._stripesync_settings = known  # type: ignore[attr-defined]
    parser.set_defaults(_settings=known)
    for key in keys:
        s = SETTINGS[key]
        if any(s.flag in a.option_strings for a in parser._actions):
            continue
        env = f" (env {s.env})" if s.env else ""
        default = f"; default {s.default}" if s.default not in (None, []) else ""
        parser.add_argument(
            s.flag,
            dest=key,
            default=None,
            action="append" if s.repeat else "store",
            metavar=s.metavar,
            help=f"{s.help}{env}{default}",
        )


def add_config_option(parser: argparse.ArgumentParser) -> None:
    if not any("--config" in a.option_strings for a in parser._actions):
        parser.add_argument(
            "--config",
            default=None,
            metavar="FILE",
            help=f"TOML settings file (default {DEFAULT_FILE} in the working directory, "
            "when there is one)",
        )


@dataclass(frozen=True)
class Resolved:
    value: Any
    source: str  # "flag", "env VAR", "file PATH", "default"


def load_file(path: str | None) -> tuple[dict[str, Any], str | None]:
    """The TOML file's settings: the given path (which must exist) or the default one."""
    if path is None:
        if not Path(DEFAULT_FILE).is_file():
            return {}, None
        path = DEFAULT_FILE
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror or e}") from None
    unknown = sorted(set(data) - set(SETTINGS))
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r} in {path}; known keys: {', '.join(sorted(SETTINGS))}"
        )
    return data, path


def resolve(
    args: argparse.Namespace,
    *,
    environ: Mapping[str, str] | None = None,
    keys: Sequence[str] | None = None,
) -> dict[str, Resolved]:
    """Fill every setting the command has (flag > env > file > default), validated, onto
    `args`; returns where each value came from."""
    environ = os.environ if environ is None else environ
    wanted = list(keys or getattr(args, "_settings", ()))
    data, path = load_file(getattr(args, "config", None))
    out: dict[str, Resolved] = {}
    for key in wanted:
        s = SETTINGS[key]
        flag_value = getattr(args, key)
        if flag_value is not None:
            raw, source = flag_value, f"flag {s.flag}"
        elif s.env and environ.get(s.env):
            raw, source = environ[s.env], f"env {s.env}"
        elif key in data:
            raw, source = data[key], f"{path}"
        else:
            raw, source = s.default, "default"
        try:
            value = raw if raw is None else s.parse(raw)
        except ValueError as e:
            raise ConfigError(f"{key} (from {source}): {e}") from None
        if key == "http_token" and value:
            remember(value)  # the others have shapes redact() knows (sk_…, whsec_…, URLs)
        setattr(args, key, value)
        out[key] = Resolved(value, source)
    return out


def masked(key: str, value: Any) -> Any:
    """A value fit to show: secrets masked."""
    s = SETTINGS[key]
    if value is None or not s.secret:
        return value
    if key == "database_url":
        return redact(str(value))
    if isinstance(value, list):
        return [v[:8] + "…" for v in value]
    if key == "http_token":
        return "***"  # no public prefix to show
    return str(value)[:8] + "…"


def show(resolved: Mapping[str, Resolved]) -> str:
    """The effective settings as TOML, secrets masked, each with where it came from."""
    lines = []
    for key, r in resolved.items():
        value = masked(key, r.value)
        text = "# unset" if value is None else f"{key} = {_toml(value)}"
        if value is None:
            text = f"# {key} is unset"
        lines.append(f"{text:<60} # {r.source}")
    return "\n".join(lines)


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
