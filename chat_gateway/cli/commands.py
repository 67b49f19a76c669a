"""The `chat` commands and their arguments."""

import argparse
import json
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse
from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape

from chat_gateway.cli import admin
from chat_gateway.cli.following import Answer, ApiError, Follow, Gateway, GaveUp, Opener, check
from shared.identity import USER_KEY_PREFIX

WELCOME = (
    "Chatting through {url}. Enter sends; Alt+Enter (or Esc, Enter) starts a new line, and a paste stays one "
    "message. Up recalls earlier questions. Ctrl-C stops showing an answer (it goes on); Ctrl-D quits."
)


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
        if args.model:
            body["model"] = args.model
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


def models(http: httpx.Client, args: argparse.Namespace) -> int:
    for model in check(http.get("/v1/models")).json()["data"]:
        print(f"{model['id']}  ({model['owned_by']})")
    return 0


def sessions(http: httpx.Client, args: argparse.Namespace) -> int:
    page = check(http.get("/chat/sessions", params=_user(args) | {"limit": 200})).json()
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
        page = check(http.get(f"/chat/sessions/{session_id}/messages", params=params)).json()
        yield from page["items"]
        if not (cursor := page["next_cursor"]):
            return


def show(http: httpx.Client, args: argparse.Namespace) -> int:
    shown = False
    console = Console(highlight=False)
    for message in _messages(http, args.id):
        marker = "" if message["status"] == "complete" else f" [{message['status']}]"
        if console.is_terminal:  # as answers are shown while they stream: Markdown, wrapped to the terminal
            console.print(f"{message['role']}{marker}:", style="bold", markup=False)
            console.print(Markdown(message["content"]), "")
        else:
            print(f"{message['role']}{marker}: {message['content']}\n")
        shown = True
    if not shown:
        print("no messages in this session yet")
    return 0


def search(http: httpx.Client, args: argparse.Namespace) -> int:
    page = check(http.get("/chat/search", params=_user(args) | {"q": args.query, "limit": args.limit})).json()
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
    session = check(http.put(f"/chat/sessions/{args.id}", json={"title": args.title})).json()
    print(f"renamed: {session['title']}")
    return 0


def favorite(http: httpx.Client, args: argparse.Namespace) -> int:
    session = check(http.patch(f"/chat/sessions/{args.id}/favorite")).json()
    print("favorite" if session["is_favorite"] else "not a favorite")
    return 0


def delete(http: httpx.Client, args: argparse.Namespace) -> int:
    session = check(http.get(f"/chat/sessions/{args.id}")).json()
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
    check(http.delete(f"/chat/sessions/{args.id}"))
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
        answer: dict[str, Any] | None = check(http.get(f"/chat/messages/{args.id}")).json()
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
    response = check(http.get(f"/chat/sessions/{args.id}/export", params={"format": args.format}))
    sys.stdout.write(response.text if args.format == "md" else json.dumps(response.json(), indent=2) + "\n")
    return 0


def usage(http: httpx.Client, args: argparse.Namespace) -> int:
    params = {name: value for name, value in (("since", args.since), ("until", args.until)) if value}
    report = check(http.get("/usage", params=_user(args) | params)).json()
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
        "--model",
        default=os.environ.get("CHAT_MODEL"),
        help="the model to ask, or an alias (CHAT_MODEL; default: the gateway's); `chat models` lists them",
    )
    parser.add_argument(
        "--reconnect-for",
        type=float,
        default=float(os.environ.get("CHAT_RECONNECT_FOR", "120")),
        metavar="SECONDS",
        help="how long to try to reach the gateway again when an answer's connection drops (CHAT_RECONNECT_FOR)",
    )
    commands = parser.add_subparsers(dest="command", metavar="command")
    commands.add_parser("sessions", help="list your sessions, favorites first")
    commands.add_parser("models", help="list the models the gateway serves, and whose they are")
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
    admin.add_parser_to(commands)
    return parser


COMMANDS: dict[str | None, Callable[[httpx.Client, argparse.Namespace], int]] = {
    None: interactive,
    "sessions": sessions,
    "models": models,
    "show": show,
    "rename": rename,
    "favorite": favorite,
    "delete": delete,
    "resume": resume,
    "search": search,
    "export": export,
    "usage": usage,
    "admin": admin.run,
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
