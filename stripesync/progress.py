"""Progress bars for the backfill: one row per collection that is running."""

from __future__ import annotations

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


class BackfillProgress:
    """Objects, pages, rate and (when the total is known) ETA per collection."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.description:<32}", markup=False),  # "[done]" is text
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[objects]:>9} objects {task.fields[pages]:>6} pages"),
            TextColumn("{task.fields[rate]:>8}/s"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> BackfillProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def update(self, p: CollectionProgress) -> None:
        if p.state == "pending":
            return
        task = self._tasks.get(p.collection)
        if task is None:
            task = self._progress.add_task(
                p.collection, total=None, objects=0, pages=0, rate="", start=True
            )
            self._tasks[p.collection] = task
        elapsed = max(1e-6, time.monotonic() - p.started)
        # the unit of completion: time slices, or parents for children
        total = p.slices_total or p.parents_total or None
        done = p.slices_done if p.slices_total else p.parents_done
        description = p.collection
        if p.state in ("done", "skipped"):
            description = f"{p.collection} [{p.state}]"
            total = total or 1
            done = total
        self._progress.update(
            task,
            description=description,
            total=total,
            completed=done,
            objects=p.objects,
            pages=p.pages,
            rate=f"{p.objects / elapsed:,.0f}",
        )
