"""Configuration: precedence, refusals that name the key, secrets masked."""

from __future__ import annotations

import pytest

from stripesync.cli import main
from stripesync.obs.redact import redact

SECRET = "sk_live_settingssecret0123456789"


def _show(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, str], str]:
    code = main(["config", "show", *argv])
    out, err = capsys.readouterr()
    values = {}
    for line in out.splitlines():
        if "=" in line and not line.startswith("#"):
            left, _, right = line.partition(" = ")
            values[left.strip()] = right.split("#")[0].strip()
    return code, values, out + err


def test_flag_beats_env_beats_file_beats_default(tmp_path, monkeypatch, capsys) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text('max_rps = 30\npoll_interval = 2\nschema = "from_file"\n')
    monkeypatch.setenv("STRIPE_API_KEY", SECRET)
    monkeypatch.setenv("STRIPESYNC_HTTP_LISTEN", "127.0.0.1:9999")
    code, values, text = _show(capsys, "--config", str(cfg), "--max-rps", "40")
    assert code == 0
    assert values["max_rps"] == "40.0" and "flag --max-rps" in text
    assert values["poll_interval"] == "2.0"
    assert values["schema"] == '"from_file"'
    assert values["http_listen"] == '"127.0.0.1:9999"' and "env STRIPESYNC_HTTP_LISTEN" in text
    assert values["lag_budget"] == "10.0"  # the default
    assert SECRET not in text and values["api_key"] == '"sk_live_…"'


def test_the_default_file_in_the_working_directory(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stripesync.toml").write_text('lag_budget = 3\n')
    code, values, _ = _show(capsys)
    assert code == 0 and values["lag_budget"] == "3.0"


@pytest.mark.parametrize(
    ("toml", "flags", "expected"),
    [
        ("bogus = 1\n", [], "unknown key 'bogus'"),
        ("max_rps = -1\n", [], "max_rps (from"),
        ('http_listen = "nowhere"\n', [], "http_listen (from"),
        ("collections = ['customer', 'nonsense']\n", [], "unknown collection"),
        ("schema = \n", [], "not valid TOML"),
        ("", ["--log-level", "loud"], "log_level (from flag --log-level)"),
        ("proxy_workers = 0\n", [], "proxy_workers (from"),
        ("proxy_workers = 1.5\n", [], "proxy_workers (from"),
        ("", ["--proxy-workers", "two"], "proxy_workers (from flag --proxy-workers)"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, capsys, toml, flags, expected) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text(toml)
    code, _, text = _show(capsys, "--config", str(cfg), *flags)
    assert code == 2
    assert expected in text and "Traceback" not in text


def test_a_missing_config_file_is_an_error(tmp_path, capsys) -> None:
    code, _, text = _show(capsys, "--config", str(tmp_path / "nope.toml"))
    assert code == 2 and "does not exist" in text


def test_secrets_are_masked_wherever_they_come_from(tmp_path, capsys) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text(f'webhook_secret = ["whsec_abcdefghijklmnop"]\napi_key = "{SECRET}"\n')
    code, values, text = _show(
        capsys, "--config", str(cfg), "--database-url", "postgresql://me:hunter22@db/x",
        "--http-token", "plain-token-4242",
    )
    assert code == 0
    assert "hunter22" not in text and "abcdefghijklmnop" not in text and SECRET not in text
    assert values["database_url"] == '"postgresql://me:***@db/x"'
    # a token has no public prefix: none of it shows, and logs mask it from then on
    assert values["http_token"] == '"***"' and "plain-token" not in text
    assert redact("GET / with Bearer plain-token-4242") == "GET / with Bearer ***"


def test_the_readme_names_every_setting_its_flag_and_its_variable() -> None:
    """A newcomer finds each setting (`--api-base` / `STRIPE_API_BASE` was once missing)."""
    from pathlib import Path

    from stripesync import settings

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [
        name
        for s in settings.SETTINGS.values()
        for name in (s.flag, s.env)
        if name is not None and name not in readme
    ]
    assert missing == []
