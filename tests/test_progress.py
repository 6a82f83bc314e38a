"""The backfill's progress bars, rendered to a recording console."""

from __future__ import annotations

import io

from rich.console import Console

from stripesync.progress import BackfillProgress
from stripesync.sync.backfill import Progress


def test_running_collections_have_rows_under_a_summary_and_leave_when_done() -> None:
    console = Console(file=io.StringIO(), width=160, force_terminal=True)
    with BackfillProgress(console) as bars:
        bars.update(Progress("customer"))  # pending: counted, no row yet
        bars.update(Progress("product"))
        bars.update(Progress("charge"))
        running = Progress("customer", state="running", objects=2500, pages=25,
                           slices_total=16, slices_done=4)
        bars.update(running)
        assert bars.running == ["customer"]
        bars.update(Progress("charge", state="skipped", skipped_reason="permission denied"))
        bars.update(Progress("product", state="running", objects=3, pages=1))
        assert bars.running == ["customer", "product"]
        text = _rendered(console, bars)
        customer = next(line for line in text.splitlines() if line.startswith("customer"))
        assert "2500 objects" in customer and "25 pages" in customer and "4/16" in customer
        summary = text.splitlines()[0]
        assert summary.startswith("backfill: collections, 1 skipped") and "1/3" in summary
        assert "2503 objects" in summary
        bars.update(Progress("product", state="done", objects=3, pages=1))
        assert bars.running == ["customer"]  # a finished collection leaves the display


def test_the_display_is_transient_and_holds_back_per_collection_lines(caplog) -> None:
    import logging

    console = Console(file=io.StringIO(), width=160, force_terminal=True)
    backfill = logging.getLogger("stripesync.backfill")
    caplog.set_level(logging.INFO, logger="stripesync.backfill")
    with BackfillProgress(console) as bars:
        bars.update(Progress("customer", state="done", objects=5, pages=1))
        backfill.info("customer: backfilled 5 objects in 1 pages", extra={"per_collection": True})
        backfill.info("something else")
    backfill.info("product: backfilled 1 objects in 1 pages", extra={"per_collection": True})
    assert [r.getMessage() for r in caplog.records] == [
        "something else", "product: backfilled 1 objects in 1 pages"
    ]  # fmt: skip
    assert bars._progress.live.transient  # the display is erased when it stops


def _rendered(console: Console, bars: BackfillProgress) -> str:
    """The display as it is now, as text."""
    capture = Console(file=io.StringIO(), width=160, record=True)
    capture.print(bars._progress.get_renderable())
    return capture.export_text()
