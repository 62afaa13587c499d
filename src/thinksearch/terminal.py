"""``ask`` and ``chat`` in a terminal: the agent loop streamed through rich.

The thinking streams dimmed, each search call and its results get their own panel, the
answer streams as plain text. ``chat`` keeps the conversation within a token budget
(oldest exchanges dropped first); Ctrl-C stops the answer being generated, not the session.

Also the ``models list`` table, whose aliases and paths are there to be copied.

Run as: ``thinksearch ask "今天比特币的价格是多少？"`` / ``thinksearch chat``.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from thinksearch.agent import Agent, AgentResult, Event, Message, trim_history
from thinksearch.errors import ThinksearchError

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console


class Display:
    """Turns the agent's events into terminal output."""

    def __init__(self, console: "Console"):
        self.console = console
        self.last = ""  # the kind of the last thing printed, to place line breaks

    def _text(self, text: str, style: str | None = None) -> None:
        self.console.print(text, style=style, end="", markup=False, highlight=False, soft_wrap=True)

    def _break(self) -> None:
        if self.last in ("thinking", "answer"):
            self.console.print()
        self.last = ""

    def __call__(self, e: Event) -> None:
        from rich.panel import Panel
        from rich.text import Text

        if e.kind == "thinking":
            if self.last != "thinking":
                self._break()
            self._text(e.text, "dim")
            self.last = "thinking"
        elif e.kind == "answer":
            if self.last != "answer":
                self._break()
            self._text(e.text)
            self.last = "answer"
        elif e.kind == "tool_call":
            self._break()
            self.console.print(Panel(Text(e.text), title="search", title_align="left", border_style="cyan", expand=False))
        elif e.kind == "tool_result" and e.tool is not None:
            failed = e.tool.error is not None
            self.console.print(Panel(Text(e.text), title="search failed" if failed else f"results ({len(e.tool.results)})",
                                     title_align="left", border_style="red" if failed else "green"))
        elif e.kind == "invalid_call":
            self._break()
            self.console.print(Text(f"[invalid tool call: {e.text}]", style="yellow"), soft_wrap=True)

    def finish(self, result: AgentResult) -> None:
        self._break()
        notes = {"length": "cut at --max-new-tokens", "max_rounds": "stopped at --max-rounds",
                 "invalid_call": "the model's tool call stayed invalid", "cancelled": "stopped",
                 "context_length": "the conversation outgrew --context-tokens"}
        if result.stop_reason in notes:
            self.console.print(f"[{notes[result.stop_reason]}]", style="yellow", markup=False, highlight=False, soft_wrap=True)
        n = len(result.searches)
        ttft = f", first token {result.first_token_s:.2f} s" if result.first_token_s is not None else ""
        self.console.print(f"({len(result.rounds)} round{'s' * (len(result.rounds) != 1)}, {n} search{'es' * (n != 1)}, "
                           f"{result.completion_tokens} tokens in {result.seconds:.1f} s{ttft})", style="dim", markup=False, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def ctrl_c_sets(cancel: threading.Event) -> Iterator[None]:
    """While inside, Ctrl-C sets ``cancel`` instead of raising (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def ask(agent: Agent, question: str, console: "Console", as_json: bool = False) -> AgentResult:
    """Answer one question: streamed with panels, or as one JSON object."""
    if as_json:
        result = agent.ask(question)
        print(result.to_json())
        return result
    display = Display(console)
    cancel = threading.Event()
    with ctrl_c_sets(cancel):
        result = agent.ask(question, on_event=display, cancel=cancel)
    display.finish(result)
    return result


HELP = "/clear forgets the conversation, /quit leaves; Ctrl-C stops an answer"


def chat(agent: Agent, console: "Console", read: Callable[[str], str] = input) -> list[Message]:
    """An interactive session; returns the history at the end."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and recall for input())

    history: list[Message] = []
    console.print(f"thinksearch chat ({agent.engine.name}) — {HELP}", style="dim", markup=False, highlight=False)
    while True:
        try:
            line = read("> ")
        except EOFError:
            console.print()
            break
        except KeyboardInterrupt:
            console.print(f"\n({HELP})", style="dim", markup=False, highlight=False)
            continue
        q = line.strip()
        if not q:
            continue
        if q in ("/quit", "/exit", "/q"):
            break
        if q == "/clear":
            history = []
            console.print("(conversation cleared)", style="dim", markup=False, highlight=False)
            continue
        if q.startswith("/"):
            console.print(f"(unknown command {q.split()[0]}; {HELP})", style="dim", markup=False, highlight=False)
            continue
        history = trim_history(agent.engine, history, agent.cfg.history_tokens, agent.system_prompt)
        display = Display(console)
        cancel = threading.Event()
        try:
            with ctrl_c_sets(cancel):
                result = agent.ask(q, history, on_event=display, cancel=cancel)
        except ThinksearchError as e:
            display._break()
            console.print(f"error: {e}", style="red", markup=False, highlight=False)
            continue
        display.finish(result)
        if result.stop_reason != "cancelled":  # a stopped answer is not remembered
            history = result.messages[1:]
    return history


def print_models(rows: Sequence[Mapping[str, Any]], console: "Console") -> None:
    """The offline models. The alias and the path are what a user copies, so neither is ever cut:
    piped or in a terminal too narrow for the table, each model is printed as plain lines instead;
    in the table the alias never wraps and long text folds instead of ending in an ellipsis."""
    from rich.table import Table
    from rich.text import Text

    def where(r: Mapping[str, Any]) -> str:
        return str(r["path"]) if r["installed"] else f"pip install 'thinksearch[{r['extra']}]'"

    longest = max((len(r["alias"]) for r in rows), default=0)
    if not console.is_terminal or console.width < longest + 50:
        for r in rows:
            state = f"installed {'yes' if r['installed'] else 'no'}, prepared {'yes' if r['prepared'] else 'no'}"
            console.print(f"{r['alias']}\n  {state}\n  {r['description']}\n  {where(r)}",
                          markup=False, highlight=False, soft_wrap=True)
        return
    table = Table()
    table.add_column("alias", no_wrap=True, min_width=longest)
    table.add_column("installed")
    table.add_column("prepared")
    table.add_column("description / path", overflow="fold")
    for r in rows:
        # Text, not markup: "[smollm2]" in the pip command is not a style tag
        table.add_row(Text(r["alias"]), "yes" if r["installed"] else "no", "yes" if r["prepared"] else "no",
                      Text(f"{r['description']}\n{where(r)}".strip()))
    console.print(table)
