"""How an answer is shown: Markdown word-wrapped to a terminal, or its text as it comes to a pipe."""

import sys

from markdown_it import MarkdownIt
from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.markdown import Markdown
from rich.segment import Segment
from rich.text import Text


class PlainDisplay:
    """An answer's text as it comes, untouched: for pipes and files (and the tests that read them)."""

    def __init__(self) -> None:
        self.ends_line = True
        self.waiting_for: str | None = None

    def text(self, text: str) -> None:
        # Noted first: a Ctrl-C lands as soon as the text is out, and what follows must start on a line of its own.
        self.ends_line = text.endswith("\n")
        sys.stdout.write(text)
        sys.stdout.flush()

    def waiting(self, status: str | None) -> None:
        # Once per outage: stderr is a log here, not a status line that can be cleared.
        if status and not self.waiting_for:
            print(status, file=sys.stderr, flush=True)
        self.waiting_for = status

    def close(self) -> None:
        if not self.ends_line:
            print(flush=True)
            self.ends_line = True

    def notice(self, text: str) -> None:
        print(text, flush=True)


_blocks = MarkdownIt("commonmark").enable("strikethrough").enable("table")


def _complete(text: str) -> int:
    """How much of ``text`` is whole Markdown blocks: those another top-level block follows, which more text
    can no longer change (the last one may still grow: a paragraph, a list, a code fence not closed yet)."""
    starts = [token.map[0] for token in _blocks.parse(text) if token.level == 0 and token.map and token.nesting >= 0]
    if len(starts) < 2:
        return 0
    lines = text.splitlines(keepends=True)
    return sum(len(line) for line in lines[: starts[-1]])


class _Lines:
    def __init__(self, lines: list[list[Segment]]) -> None:
        self.lines = lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in self.lines:
            yield from line
            yield Segment.line()


class RichDisplay:
    """An answer as Markdown, word-wrapped to the terminal. Blocks are printed for good once whole; the one
    still growing is drawn below them in a live region, redrawn as text arrives, so nothing is printed twice."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.pending = ""
        self.status: str | None = None
        self.blocks = 0
        self.live = Live(self, console=console, transient=True, refresh_per_second=8, vertical_overflow="crop")
        self.live.start()

    def _render(self, markdown: str) -> list[list[Segment]]:
        lines = self.console.render_lines(Markdown(markdown), pad=False)
        while lines and not "".join(segment.text for segment in lines[0]).strip():
            lines.pop(0)
        while lines and not "".join(segment.text for segment in lines[-1]).strip():
            lines.pop()
        return lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        # Only what fits: a live region taller than the screen cannot be redrawn in place.
        room = max(1, console.height - 2)
        lines = self._render(self.pending)[-room:] if self.pending.strip() else []
        if self.blocks and lines:
            yield Segment.line()
        yield _Lines(lines)
        if self.status:
            yield Text(self.status, style="dim italic")

    def _print(self, markdown: str) -> None:
        if lines := self._render(markdown):
            if self.blocks:
                self.console.print()
            self.console.print(_Lines(lines), end="")
            self.blocks += 1

    def text(self, text: str) -> None:
        self.pending += text
        if whole := _complete(self.pending):
            self._print(self.pending[:whole])
            self.pending = self.pending[whole:]

    def waiting(self, status: str | None) -> None:
        self.status = status
        self.live.refresh()

    def close(self) -> None:
        if self.live.is_started:
            self.status = None
            self.live.stop()
            self._print(self.pending)
            self.pending = ""

    def notice(self, text: str) -> None:
        # Unwrapped: the command it may give is copied whole.
        self.console.print(text, markup=False, highlight=False, style="dim", soft_wrap=True)


Display = PlainDisplay | RichDisplay


def make_display() -> Display:
    console = Console(highlight=False)
    return RichDisplay(console) if console.is_terminal and not console.is_dumb_terminal else PlainDisplay()
