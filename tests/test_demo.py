"""`stripesync demo`, the README's first command, end to end in a subprocess."""

import subprocess
import sys

import psycopg


def test_demo_backfills_and_follows_live_activity(tmp_path, pg_data_dir):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "stripesync",
            "demo",
            "--duration",
            "3",
            "--customers",
            "40",
            "--data-dir",
            str(pg_data_dir),
            "--no-progress",
            "--http-listen",
            "127.0.0.1:0",
            "--proxy-listen",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    err = out.stderr
    assert "emulator: http://127.0.0.1:" in err
    assert "backfilled" in err
    assert not [line for line in err.splitlines() if line.startswith("  skipped ")]
    assert "status page: http://127.0.0.1:" in err
    assert "through the proxy: psql 'postgresql://postgres@127.0.0.1:" in err
    assert "INSERT INTO stripe.customer" in err  # the example write through the proxy
    url_line = next(line for line in err.splitlines() if line.startswith("database: psql"))
    url = url_line.split("'")[1]
    with psycopg.connect(url) as conn:
        customers = conn.execute("SELECT count(*) FROM stripe.customer").fetchone()[0]
        live = conn.execute(
            "SELECT count(*) FROM stripe.customer WHERE email LIKE 'live%%'"
        ).fetchone()[0]
    assert customers >= 40
    assert live >= 1  # created through the SDK during the demo, arrived by the live sync
    assert "live sync applied" in err
