"""Progress bars for the backfill: a live display of the collections being read.

One line sums it up (collections done of all, objects, skipped); below it one row per
collection that is running. A collection that finishes leaves the display, and the whole
display goes when the backfill ends (transient): what stays on the screen is the
one-line summary the command prints after, then the ready banner. The per-collection
"backfilled N objects" log lines are held back while the display shows the same.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from stripesync.sync.backfill import Progress as CollectionProgress


class _HoldPerCollectionLines(logging.Filter):
    """Drops the backfill's per-collection completion lines (the display shows them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "per_collection", False)


class BackfillProgress:
    """Objects, pages, rate and (when the total is known) ETA per running collection,
    under a summary line; transient (see the module doc)."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.description:<32}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[objects]:>9} objects {task.fields[pages]:>6} pages"),
            TextColumn("{task.fields[rate]:>8}/s"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._tasks: dict[str, TaskID] = {}
        self._states: dict[str, str] = {}
        self._objects: dict[str, int] = {}
        self._pages: dict[str, int] = {}
        self._started = time.monotonic()
        self._summary = self._progress.add_task(
            "backfill", total=None, objects=0, pages=0, rate="", start=True
        )
        self._filter = _HoldPerCollectionLines()
        self._logger = logging.getLogger("stripesync.backfill")

    def __enter__(self) -> BackfillProgress:
        self._logger.addFilter(self._filter)
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()
        self._logger.removeFilter(self._filter)

    @property
    def running(self) -> list[str]:
        """The collections that have a row now."""
        return sorted(self._tasks)

    def update(self, p: CollectionProgress) -> None:
        self._states[p.collection] = p.state
        self._objects[p.collection] = p.objects
        self._pages[p.collection] = p.pages
        self._update_summary()
        if p.state == "pending":
            return
        task = self._tasks.get(p.collection)
        if p.state in ("done", "skipped"):  # it leaves the display
            if task is not None:
                self._progress.remove_task(task)
                del self._tasks[p.collection]
            return
        if task is None:
            task = self._progress.add_task(
                p.collection, total=None, objects=0, pages=0, rate="", start=True
            )
            self._tasks[p.collection] = task
        elapsed = max(1e-6, time.monotonic() - p.started)
        # the unit of completion: time slices, or parents for children
        total = p.slices_total or p.parents_total or None
        done = p.slices_done if p.slices_total else p.parents_done
        self._progress.update(
            task,
            total=total,
            completed=done,
            objects=p.objects,
            pages=p.pages,
            rate=f"{p.objects / elapsed:,.0f}",
        )

    def _update_summary(self) -> None:
        states = list(self._states.values())
        finished = sum(s in ("done", "skipped") for s in states)
        skipped = states.count("skipped")
        objects = sum(self._objects.values())
        elapsed = max(1e-6, time.monotonic() - self._started)
        note = f", {skipped} skipped" if skipped else ""
        self._progress.update(
            self._summary,
            description=f"backfill: collections{note}",
            total=len(states) or None,
            completed=finished,
            objects=objects,
            pages=sum(self._pages.values()),
            rate=f"{objects / elapsed:,.0f}",
        )
