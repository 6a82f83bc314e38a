"""Log lines: readable or JSON, never a secret."""

from __future__ import annotations

import io
import json
import logging

from stripesync.obs.logs import setup_logging

SECRET = "sk_live_logsecret0123456789abcd"


def _emit(fmt: str) -> str:
    stream = io.StringIO()
    setup_logging(fmt, "info", stream=stream)
    log = logging.getLogger("stripesync.test")
    log.info("backfilled %s with key %s", "customer", SECRET, extra={"collection": "customer"})
    log.debug("hidden at info")
    try:
        raise ValueError(f"bad postgresql://u:topsecret@h/db {SECRET}")
    except ValueError:
        log.exception("failed")
    return stream.getvalue()


def test_json_lines_carry_fields_and_no_secret() -> None:
    out = _emit("json")
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["level"] for r in lines] == ["info", "error"]
    assert lines[0]["logger"] == "stripesync.test" and lines[0]["collection"] == "customer"
    assert lines[0]["msg"].startswith("backfilled customer with key sk_live_")
    assert "ValueError" in lines[1]["error"]
    assert SECRET not in out and "topsecret" not in out


def test_text_lines_are_readable_and_masked() -> None:
    out = _emit("text")
    first = out.splitlines()[0]
    assert " INFO stripesync.test: backfilled customer with key sk_live_" in first
    assert "hidden at info" not in out
    assert SECRET not in out and "topsecret" not in out
