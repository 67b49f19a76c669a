"""`chat`: a terminal client of the gateway (also `python -m chat_gateway.cli`).

An answer is followed to its end whatever happens to the connection: dropped, or the gateway restarted, the
client reconnects and goes on from the last offset it showed (SSE Last-Event-ID), for ``--reconnect-for``
seconds. Ctrl-C while an answer streams stops the display, not the answer: `chat resume ID` shows the rest.
"""

import argparse
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import EventSource, connect_sse
from markdown_it import MarkdownIt
from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.markdown import Markdown
from rich.markup import escape
from rich.segment import Segment
from rich.text import Text

from shared.identity import USER_KEY_PREFIX

STOPPED = "[display stopped; the answer goes on: `chat resume {message}` shows the rest]"
GAVE_UP = (
    "[the gateway has been unreachable for {seconds:g} s; the answer may go on: `chat resume {message}` follows it]"
)
FAILED = "[answer failed: {error}; `chat resume {message}` continues it]"
WELCOME = (
    "Chatting through {url}. Enter sends; Alt+Enter (or Esc, Enter) starts a new line, and a paste stays one "
    "message. Up recalls earlier questions. Ctrl-C stops showing an answer (it goes on); Ctrl-D quits."
)
# Answers the gateway may give while it restarts or behind a proxy: worth another try, unlike a 4xx.
TRANSIENT = frozenset({502, 503, 504})
RETRY_WAITS = (0.1, 0.25, 0.5, 1.0, 2.0)


class ApiError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status


class Gateway(httpx.Client):
    """The gateway's client; it remembers whether the gateway has answered at all in this run."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(event_hooks={"response": [self._answered]}, **kwargs)
        self.reached = False

    def _answered(self, response: httpx.Response) -> None:
        self.reached = True


class GaveUp(Exception):
    """The gateway stayed unreachable for longer than ``--reconnect-for``."""


def _check(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    response.read()
    try:
        body = response.json()
        detail = body.get("detail") or body.get("error", {}).get("message") or response.text
    except ValueError:
        detail = response.text
    raise ApiError(response.status_code, detail)


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


def _display() -> Display:
    console = Console(highlight=False)
    return RichDisplay(console) if console.is_terminal and not console.is_dumb_terminal else PlainDisplay()


@dataclass
class Answer:
    """An answer being followed: its ids once known, and the offset of the last event shown."""

    message_id: str | None = None
    session_id: str | None = None
    seen: str = "0"
    tool_calls: list[str] = field(default_factory=list)


Opener = Callable[[], AbstractContextManager[EventSource]]


class Follow:
    """Shows an answer from a first request (a question, a resume, an attach) to the answer's end, through
    dropped connections and gateway restarts; a question is sent again under its Idempotency-Key until its
    answer's id is known, after which the answer is followed from the last offset shown."""

    def __init__(self, http: httpx.Client, args: argparse.Namespace, answer: Answer | None = None) -> None:
        self.http = http
        self.reconnect_for: float = args.reconnect_for
        self.answer = answer or Answer()
        self.display = _display()

    def _reattach(self) -> AbstractContextManager[EventSource]:
        path = f"/chat/messages/{self.answer.message_id}/stream"
        return connect_sse(self.http, "GET", path, headers={"last-event-id": self.answer.seen})

    def _events(self, source: EventSource) -> Iterator[tuple[str, dict[str, Any]]]:
        for event in source.iter_sse():
            if event.event == "ping" or not event.data:
                continue
            yield event.event, json.loads(event.data)
            if event.id:
                self.answer.seen = event.id

    def run(self, first: Opener) -> bool:
        """True when the answer was shown to its end; False when it failed, or Ctrl-C stopped the display."""
        try:
            return self._run(first)
        except KeyboardInterrupt:
            self.display.close()
            self.display.notice(STOPPED.format(message=self.answer.message_id or "ID"))
            return False
        finally:
            self.display.close()

    def _run(self, first: Opener) -> bool:
        opener, down_since, attempt = first, None, 0
        while True:
            try:
                with opener() as source:
                    _check(source.response)
                    self.display.waiting(None)
                    for kind, data in self._events(source):
                        if (ended := self._show(kind, data)) is not None:
                            return ended
                        if kind != "start":  # the answer moves on: a new outage starts the clock anew
                            down_since, attempt = None, 0
            except ApiError as exc:
                if exc.status not in TRANSIENT or self.answer.message_id is None:
                    raise
            except httpx.TransportError:
                if self.answer.message_id is None and not (isinstance(self.http, Gateway) and self.http.reached):
                    raise  # never reached: a wrong URL, or no gateway running, is said at once
            # Dropped, or the gateway lost track of the answer (an error without status): it may well go on.
            if self.answer.message_id is not None:
                opener = self._reattach
            down_since = down_since or time.monotonic()
            if time.monotonic() - down_since > self.reconnect_for:
                raise GaveUp(GAVE_UP.format(seconds=self.reconnect_for, message=self.answer.message_id or "ID"))
            self.display.waiting("reconnecting…")
            time.sleep(RETRY_WAITS[min(attempt, len(RETRY_WAITS) - 1)])
            attempt += 1

    def _show(self, kind: str, data: dict[str, Any]) -> bool | None:
        """Show one event: True or False once the answer has ended (well or not), None while it goes on."""
        if kind == "start":
            self.answer.message_id, self.answer.session_id = data["message_id"], data["session_id"]
        elif kind == "delta":
            self.display.text(data["text"])
        elif kind == "tool_call":
            function = data.get("function") or {}
            self.answer.tool_calls.append(f"[tool call: {function.get('name')}({function.get('arguments')})]")
        elif kind == "done":
            self.display.close()
            for call in self.answer.tool_calls:
                self.display.notice(call)
            if data.get("finish_reason") == "length":
                self.display.notice("[the answer reached its length limit]")
            return True
        elif kind == "error" and data.get("status") is not None:
            self.display.close()
            if data["status"] == "failed":
                self.display.notice(FAILED.format(error=data["error"], message=self.answer.message_id))
                return False
            self.display.notice(f"[{data['error']}]")
            return True
        elif kind == "error":
            raise httpx.RemoteProtocolError(data.get("error") or "the gateway lost track of the answer")
        return None


def _history_file() -> Path:
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    path = data / "durable-chat" / "history"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _questions(args: argparse.Namespace) -> Iterator[str]:
    """The questions typed: edited with prompt_toolkit in a terminal, else whole lines of stdin (scripts)."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        while True:
            try:
                yield input("you> " if sys.stdin.isatty() else "")
            except (EOFError, KeyboardInterrupt):
                return
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.key_binding import KeyBindings

    keys = KeyBindings()
    # The chat convention: Enter sends. Multi-line mode is kept for the rest (a bracketed paste is inserted
    # whole, newlines and all, so it stays one message), with Alt+Enter to start a new line by hand.
    keys.add("enter")(lambda event: event.current_buffer.validate_and_handle())
    keys.add("escape", "enter")(lambda event: event.current_buffer.newline())
    session: PromptSession[str] = PromptSession(
        history=FileHistory(_history_file()), multiline=True, key_bindings=keys, prompt_continuation="...  "
    )
    print(WELCOME.format(url=args.url))
    while True:
        try:
            yield session.prompt("you> ")
        except KeyboardInterrupt:
            continue  # the line is cleared, as in a shell
        except EOFError:
            return


def interactive(http: httpx.Client, args: argparse.Namespace) -> int:
    session = args.session
    for line in _questions(args):
        if not line.strip():
            continue
        body: dict[str, Any] = {"message": line, "stream": True} | _user(args)
        if session:
            body["session_id"] = session
        # Sent again after a dropped connection, the same key attaches to the answer instead of asking twice.
        key = {"idempotency-key": str(uuid.uuid4())}
        follow = Follow(http, args)
        try:
            follow.run(_sse(http, "POST", "/chat", json=body, headers=key))
        except (GaveUp, ApiError) as exc:
            # At a prompt, the next question may fare better; a script is told by the exit status.
            print(exc if isinstance(exc, GaveUp) else f"error: {exc}", file=sys.stderr, flush=True)
            if not sys.stdin.isatty():
                return 1
        session = follow.answer.session_id or session
    if sys.stdin.isatty():
        print()
    return 0


def _user(args: argparse.Namespace) -> dict[str, str]:
    """The user to act for, when one is named: a user's key speaks for its user alone."""
    return {"user_id": args.user} if args.user else {}


def sessions(http: httpx.Client, args: argparse.Namespace) -> int:
    page = _check(http.get("/chat/sessions", params=_user(args) | {"limit": 200})).json()
    if not page["items"]:
        print("no sessions yet")
    for item in page["items"]:
        star = "*" if item["is_favorite"] else " "
        print(f"{star} {item['id']}  {item['updated_at'][:16].replace('T', ' ')}  {item['title']}")
    return 0


def _messages(http: httpx.Client, session_id: str) -> Iterator[dict[str, Any]]:
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 200} | ({"cursor": cursor} if cursor else {})
        page = _check(http.get(f"/chat/sessions/{session_id}/messages", params=params)).json()
        yield from page["items"]
        if not (cursor := page["next_cursor"]):
            return


def show(http: httpx.Client, args: argparse.Namespace) -> int:
    shown = False
    for message in _messages(http, args.id):
        marker = "" if message["status"] == "complete" else f" [{message['status']}]"
        print(f"{message['role']}{marker}: {message['content']}\n")
        shown = True
    if not shown:
        print("no messages in this session yet")
    return 0


def search(http: httpx.Client, args: argparse.Namespace) -> int:
    page = _check(http.get("/chat/search", params=_user(args) | {"q": args.query, "limit": args.limit})).json()
    if not page["items"]:
        print(f"nothing found for {args.query!r}")
    console = Console(highlight=False)
    for hit in page["items"]:
        print(f"{hit['session_id']}  {hit['created_at'][:16].replace('T', ' ')}  {hit['title']}")
        if hit["kind"] != "message":
            continue
        if not console.is_terminal:
            print(f"    {hit['role']}: {hit['snippet']}")
            continue
        # The matched words (between ** and **) in bold.
        snippet = re.sub(r"\*\*(.+?)\*\*", r"[bold]\1[/bold]", escape(hit["snippet"]))
        console.print(f"    {hit['role']}: {snippet}", soft_wrap=True)
    return 0


def rename(http: httpx.Client, args: argparse.Namespace) -> int:
    session = _check(http.put(f"/chat/sessions/{args.id}", json={"title": args.title})).json()
    print(f"renamed: {session['title']}")
    return 0


def favorite(http: httpx.Client, args: argparse.Namespace) -> int:
    session = _check(http.patch(f"/chat/sessions/{args.id}/favorite")).json()
    print("favorite" if session["is_favorite"] else "not a favorite")
    return 0


def delete(http: httpx.Client, args: argparse.Namespace) -> int:
    session = _check(http.get(f"/chat/sessions/{args.id}")).json()
    if not args.yes:
        if not sys.stdin.isatty():
            print("error: not deleted: confirm with --yes (no terminal to ask on)", file=sys.stderr)
            return 1
        try:
            answer = input(f"Delete {session['title']!r} and all its messages? [y/N] ")
        except (EOFError, KeyboardInterrupt):
            answer = ""
            print()
        if answer.strip().lower() not in ("y", "yes"):
            print("not deleted")
            return 1
    _check(http.delete(f"/chat/sessions/{args.id}"))
    print("deleted")
    return 0


def _last_answer(http: httpx.Client, session_id: str) -> dict[str, Any] | None:
    answers = [message for message in _messages(http, session_id) if message["role"] == "assistant"]
    return answers[-1] if answers else None


def _sse(http: httpx.Client, method: str, path: str, **kwargs: Any) -> Opener:
    return lambda: connect_sse(http, method, path, **kwargs)


def resume(http: httpx.Client, args: argparse.Namespace) -> int:
    """Show an answer (by its id, or a session's last one by the session's id) to its end: attached to while
    it is generated, shown when complete, and generated on from its saved text only when failed or pending."""
    try:
        answer: dict[str, Any] | None = _check(http.get(f"/chat/messages/{args.id}")).json()
    except ApiError as exc:
        if exc.status != 404:
            raise
        answer = _last_answer(http, args.id)
        if answer is None:  # no answer to look at: the gateway says why it cannot resume
            return _finish(Follow(http, args), _sse(http, "POST", f"/chat/sessions/{args.id}/resume?stream=true"))
    assert answer is not None
    if answer["role"] != "assistant":
        raise ApiError(409, f"{args.id} is a question, not an answer: `chat show {answer['session_id']}` shows it")
    ids = Answer(message_id=answer["id"], session_id=answer["session_id"])
    if answer["status"] in ("pending", "failed"):
        try:
            return _finish(
                Follow(http, args, ids), _sse(http, "POST", f"/chat/messages/{ids.message_id}/resume?stream=true")
            )
        except ApiError as exc:
            if exc.status != 409:
                raise
            # Resumed by someone else meanwhile: follow theirs.
    return _finish(Follow(http, args, ids), _sse(http, "GET", f"/chat/messages/{ids.message_id}/stream?offset=0"))


def _finish(follow: Follow, first: Opener) -> int:
    try:
        return 0 if follow.run(first) else 1
    except GaveUp as exc:
        print(exc, file=sys.stderr, flush=True)
        return 1


def export(http: httpx.Client, args: argparse.Namespace) -> int:
    response = _check(http.get(f"/chat/sessions/{args.id}/export", params={"format": args.format}))
    sys.stdout.write(response.text if args.format == "md" else json.dumps(response.json(), indent=2) + "\n")
    return 0


def usage(http: httpx.Client, args: argparse.Namespace) -> int:
    params = {name: value for name, value in (("since", args.since), ("until", args.until)) if value}
    report = _check(http.get("/usage", params=_user(args) | params)).json()
    if not report["rows"]:
        print(f"no usage from {report['since']} to {report['until']}")
        return 0
    for row in report["rows"]:
        estimated = f" ({row['estimated_tokens']} estimated)" if row["estimated_tokens"] else ""
        print(
            f"{row['day']}  {row['user_id']}  {row['model'] or '-'}  {row['answers']} answers  "
            f"{row['total_tokens']} tokens{estimated}"
        )
    print(f"{report['since']} to {report['until']}: {report['total_tokens']} tokens")
    return 0


def _budget(text: str) -> tuple[str, int]:
    """``--budget``: N/day or N/month (N alone: per month)."""
    amount, _, period = text.partition("/")
    if not amount.isdigit() or int(amount) < 1 or period not in ("", "day", "month"):
        raise argparse.ArgumentTypeError(f"{text!r}: give N/day or N/month, N a positive number of tokens")
    return f"tokens_per_{period or 'month'}", int(amount)


def _limits(args: argparse.Namespace) -> dict[str, int]:
    """The limits given on the command line (the others are left as they are)."""
    given = {
        "requests_per_minute": args.rpm,
        "tokens_per_day": args.tokens_per_day,
        "tokens_per_month": args.tokens_per_month,
    }
    if args.budget:
        given[args.budget[0]] = args.budget[1]
    return {name: value for name, value in given.items() if value is not None}


def keys_create(http: httpx.Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"user_id": args.for_user, "name": args.name, "limits": _limits(args)}
    if args.expires_in_days is not None:
        body["expires_at"] = (datetime.now(UTC) + timedelta(days=args.expires_in_days)).isoformat()
    created = _check(http.post("/admin/keys", json=body)).json()
    print(created["key"])
    print(f"(the key of {created['user_id']}, id {created['id']}: shown this once, keep it)", file=sys.stderr)
    return 0


def keys_list(http: httpx.Client, args: argparse.Namespace) -> int:
    params = {"user_id": args.for_user} if args.for_user else None
    listed = _check(http.get("/admin/keys", params=params)).json()
    if not listed:
        print("no keys")
    for key in listed:
        state = (
            "revoked" if key["revoked_at"] else f"expires {key['expires_at'][:10]}" if key["expires_at"] else "active"
        )
        used = (key["last_used_at"] or "never")[:16].replace("T", " ")
        print(f"{key['id']}  {key['prefix']}...  {key['user_id']}  {key['name'] or '-'}  {state}  last used {used}")
    return 0


def keys_revoke(http: httpx.Client, args: argparse.Namespace) -> int:
    revoked = _check(http.delete(f"/admin/keys/{args.id}")).json()
    print(f"revoked {revoked['prefix']}... of {revoked['user_id']}")
    return 0


def limits_set(http: httpx.Client, args: argparse.Namespace) -> int:
    """Show a user's limits, changing those given (0 removes one: the default applies again)."""
    path = f"/admin/users/{quote(args.for_user, safe='')}/limits"
    limits = _check(http.get(path)).json()["limits"]
    if changes := _limits(args):
        limits |= {name: value or None for name, value in changes.items()}
        limits = _check(http.put(path, json=limits)).json()["limits"]
    print(json.dumps(limits))
    return 0


def _limit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rpm", type=int, help="requests per minute")
    parser.add_argument("--tokens-per-day", type=int)
    parser.add_argument("--tokens-per-month", type=int)
    parser.add_argument("--budget", type=_budget, help="a token budget: N/day or N/month (N alone: per month)")


def _admin_parser(commands: Any) -> None:
    admin = commands.add_parser("admin", help="manage user keys and limits (with an admin key)")
    areas = admin.add_subparsers(dest="area", metavar="area", required=True)
    keys = areas.add_parser("keys", help="user keys").add_subparsers(dest="action", metavar="action", required=True)
    create = keys.add_parser("create", help="create a key for a user (printed once)")
    create.add_argument("--user", dest="for_user", required=True)
    create.add_argument("--name")
    create.add_argument("--expires-in-days", type=float)
    _limit_options(create)
    listing = keys.add_parser("list", help="list keys")
    listing.add_argument("--user", dest="for_user")
    keys.add_parser("revoke", help="revoke a key").add_argument("id")
    limits = areas.add_parser("limits", help="a user's limits")
    limits.add_argument("--user", dest="for_user", required=True)
    _limit_options(limits)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chat", description="Chat through the durable chat gateway.")
    parser.add_argument("--url", default=os.environ.get("CHAT_URL", "http://localhost:8100"), help="gateway URL")
    parser.add_argument("--key", default=os.environ.get("CHAT_API_KEY"), help="gateway key (CHAT_API_KEY)")
    parser.add_argument(
        "--user",
        default=os.environ.get("CHAT_USER"),
        help="whose chats (CHAT_USER; default: a user key's own, or your login name in open mode)",
    )
    parser.add_argument("--session", help="continue this session (interactive mode)")
    parser.add_argument(
        "--reconnect-for",
        type=float,
        default=float(os.environ.get("CHAT_RECONNECT_FOR", "120")),
        metavar="SECONDS",
        help="how long to try to reach the gateway again when an answer's connection drops (CHAT_RECONNECT_FOR)",
    )
    commands = parser.add_subparsers(dest="command", metavar="command")
    commands.add_parser("sessions", help="list your sessions, favorites first")
    for name, text in (
        ("show", "print a session"),
        ("favorite", "toggle a session's favorite flag"),
        ("resume", "show an answer to its end: follow it, or continue it if it failed (message or session id)"),
    ):
        commands.add_parser(name, help=text).add_argument("id")
    deleting = commands.add_parser("delete", help="delete a session (asks first)")
    deleting.add_argument("id")
    deleting.add_argument("-y", "--yes", action="store_true", help="do not ask")
    searching = commands.add_parser("search", help="search your messages and session titles")
    searching.add_argument("query")
    searching.add_argument("--limit", type=int, default=20, help="at most this many results (up to 200)")
    renaming = commands.add_parser("rename", help="rename a session")
    renaming.add_argument("id")
    renaming.add_argument("title")
    exporting = commands.add_parser("export", help="print a session as Markdown or JSON")
    exporting.add_argument("id")
    exporting.add_argument("--format", choices=["md", "json"], default="md")
    usage_parser = commands.add_parser("usage", help="tokens used, by day and model")
    usage_parser.add_argument("--since", help="first day, YYYY-MM-DD (default: the month's first)")
    usage_parser.add_argument("--until", help="last day, YYYY-MM-DD (default: today)")
    _admin_parser(commands)
    return parser


COMMANDS: dict[str | None, Callable[[httpx.Client, argparse.Namespace], int]] = {
    None: interactive,
    "sessions": sessions,
    "show": show,
    "rename": rename,
    "favorite": favorite,
    "delete": delete,
    "resume": resume,
    "search": search,
    "export": export,
    "usage": usage,
    "admin": lambda http, args: ADMIN[(args.area, getattr(args, "action", None))](http, args),
}
ADMIN: dict[tuple[str, str | None], Callable[[httpx.Client, argparse.Namespace], int]] = {
    ("keys", "create"): keys_create,
    ("keys", "list"): keys_list,
    ("keys", "revoke"): keys_revoke,
    ("limits", None): limits_set,
}


def _speaks_for_a_user(key: str | None) -> bool:
    """A user key or a JWT: its user is whose chats they are, and naming another is refused."""
    return key is not None and (key.startswith(USER_KEY_PREFIX) or key.count(".") == 2)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.user is None and not _speaks_for_a_user(args.key) and args.command != "admin":
        args.user = os.environ.get("USER")  # open mode, or an admin key: your chats are your login name's
    headers = {"x-api-key": args.key} if args.key else {}
    # The gateway pings a stream every 15 s, however slow the answer: a minute of silence is a dead connection.
    with Gateway(base_url=args.url, headers=headers, timeout=httpx.Timeout(30.0, read=60.0)) as http:
        try:
            return COMMANDS[args.command](http, args)
        except ApiError as exc:
            print(f"error: {exc}", file=sys.stderr)
        except httpx.TransportError as exc:
            print(f"error: cannot reach the gateway at {args.url}: {exc}", file=sys.stderr)
        except KeyboardInterrupt:
            print(file=sys.stderr)
            return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
