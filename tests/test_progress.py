"""The backfill's progress bars, rendered to a recording console."""

from __future__ import annotations

import io

from rich.console import Console

from stripesync.progress import BackfillProgress
from stripesync.sync.backfill import Progress


def test_rows_show_objects_pages_rate_and_state() -> None:
    console = Console(file=io.StringIO(), width=160, force_terminal=True, record=True)
    with BackfillProgress(console) as bars:
        bars.update(Progress("customer"))  # pending: no row yet
        running = Progress("customer", state="running", objects=2500, pages=25,
                           slices_total=16, slices_done=4)
        bars.update(running)
        bars.update(Progress("charge", state="skipped", skipped_reason="permission denied"))
    text = console.export_text()
    customer = next(line for line in text.splitlines() if line.startswith("customer"))
    assert "2500 objects" in customer and "25 pages" in customer and "4/16" in customer
    assert "/s" in customer
    assert any(line.startswith("charge [skipped]") for line in text.splitlines())
