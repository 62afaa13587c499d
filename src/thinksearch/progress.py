"""Progress for the long stages: a live bar in a terminal, plain timestamped lines in a log.

rich draws nothing while its output is not a terminal (``make run > run.log``, nohup, CI),
so a background run of synth, train or eval would be silent for an hour. Here the same
``rich.progress.Progress`` object also writes one line every ``every_s`` seconds whenever it
cannot draw a bar (output redirected, or ``--no-progress``).
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn
from rich.text import Text


class _Progress(Progress):
    def __init__(self, *columns: str | ProgressColumn, lines: bool, every_s: float, **kw: Any):
        super().__init__(*columns, disable=lines, **kw)
        self._lines = lines
        self._every_s = every_s
        self._last = time.monotonic()
        self._printed = False
        self._done: set[Any] = set()

    def update(self, task_id: Any, **kw: Any) -> None:  # type: ignore[override]
        super().update(task_id, **kw)
        self._maybe_line()

    def advance(self, task_id: Any, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._maybe_line()

    def stop(self) -> None:
        # A final line only where earlier lines were printed: short runs stay quiet.
        if self._lines and self._printed:
            self._line(final=True)
        super().stop()

    def _maybe_line(self) -> None:
        if self._lines and time.monotonic() - self._last >= self._every_s:
            self._line()

    def _line(self, final: bool = False) -> None:
        self._last = time.monotonic()
        self._printed = True
        columns = [c for c in self.columns if not isinstance(c, BarColumn)]
        for task in self.tasks:
            # A finished task was reported once already; only the final lines repeat it.
            if not task.visible or (task.finished and not final and task.id in self._done):
                continue
            if task.finished:
                self._done.add(task.id)
            parts = [Text(time.strftime("%H:%M:%S"))]
            for col in columns:
                cell = Text.from_markup(col.format(task=task)) if isinstance(col, str) else col(task)
                if isinstance(cell, Text) and cell.plain.strip():
                    parts.append(cell)
            self.console.print(Text(" ").join(parts), soft_wrap=True, highlight=False)


def progress(*columns: str | ProgressColumn, console: Console | None = None, bar: bool = True,
             every_s: float = 30.0, transient: bool = False) -> Progress:
    """A ``Progress`` that draws a bar when ``bar`` and the console is a terminal, else logs lines."""
    console = console or Console(stderr=True)
    lines = not (bar and console.is_terminal)
    # Steps of these stages take seconds to minutes: rich's default 30 s window would often
    # hold a single sample and show no rate or ETA at all.
    return _Progress(*columns, console=console, lines=lines, every_s=every_s, transient=transient,
                     speed_estimate_period=600.0)
