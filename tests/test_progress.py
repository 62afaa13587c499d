"""Progress output: a bar in a terminal, timestamped plain lines when the output is a log."""

from __future__ import annotations

import io
import re

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn

from thinksearch.progress import progress


def _run(console: Console, bar: bool, every_s: float, steps: int = 3) -> None:
    with progress(TextColumn("[bold]synth"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                  console=console, bar=bar, every_s=every_s) as p:
        task = p.add_task("synth", total=steps, loss="-")
        for i in range(steps):
            p.update(task, advance=1, loss=f"{1.0 / (i + 1):.2f}")


def test_a_log_gets_one_plain_line_per_interval_and_a_final_one():
    out = io.StringIO()
    _run(Console(file=out, width=40), bar=True, every_s=0.0)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4  # one per update, one at the end
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d synth \d/3 loss [\d.]+", line) for line in lines), lines
    assert lines[-1].endswith("synth 3/3 loss 0.33")
    assert "━" not in out.getvalue()  # no bar characters in a log


def test_short_runs_stay_quiet_in_a_log():
    out = io.StringIO()
    _run(Console(file=out), bar=True, every_s=3600.0)
    assert out.getvalue() == ""


def test_no_progress_in_a_terminal_logs_lines_instead_of_a_bar():
    out = io.StringIO()
    _run(Console(file=out, force_terminal=True, width=60), bar=False, every_s=0.0)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())
    assert "synth 3/3 loss 0.33" in plain and "━" not in plain


def test_a_terminal_gets_the_bar():
    out = io.StringIO()
    _run(Console(file=out, force_terminal=True, width=60), bar=True, every_s=0.0)
    assert "━" in out.getvalue() and not re.search(r"^\d\d:\d\d:\d\d synth", out.getvalue(), re.M)


def test_a_finished_task_is_not_repeated_while_another_runs():
    out = io.StringIO()
    with progress(TextColumn("{task.description}"), MofNCompleteColumn(), console=Console(file=out, width=60),
                  every_s=0.0) as p:
        a = p.add_task("base", total=1)
        p.update(a, advance=1)
        b = p.add_task("tuned", total=3)
        for _ in range(3):
            p.update(b, advance=1)
    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines.count("base 1/1") == 2  # when it finished, and in the final lines
    assert lines[-2:] == ["base 1/1", "tuned 3/3"]
