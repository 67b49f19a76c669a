"""`chat`: a terminal client of the gateway (also `python -m chat_gateway.cli`).

Ctrl-C while an answer streams stops the display, not the answer: `chat resume` or `chat show` gets the rest.
"""

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import httpx
from httpx_sse import connect_sse

STOPPED = "\n[display stopped; the answer goes on: `chat show {session}` or `chat resume {message}` gets the rest]"


class ApiError(Exception):
    pass


def _check(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    response.read()
    try:
        body = response.json()
        detail = body.get("detail") or body.get("error", {}).get("message") or response.text
    except ValueError:
        detail = response.text
    raise ApiError(f"{response.status_code}: {detail}")


def _stream(http: httpx.Client, method: str, path: str, body: dict[str, Any] | None = None) -> str | None:
    """Print an answer as it grows; returns its session id. Ctrl-C stops the display only."""
    ids: dict[str, str] = {}
    try:
        with connect_sse(http, method, path, json=body) as source:
            _check(source.response)
            for event in source.iter_sse():
                data = json.loads(event.data)
                if event.event == "start":
                    ids = data
                elif event.event == "delta":
                    print(data["text"], end="", flush=True)
                elif event.event == "done":
                    print(flush=True)
                elif event.event == "error":
                    print(f"\n[answer failed: {data['error']}]", flush=True)
    except KeyboardInterrupt:
        print(STOPPED.format(session=ids.get("session_id", "SESSION"), message=ids.get("message_id", "ID")))
    return ids.get("session_id")


def interactive(http: httpx.Client, args: argparse.Namespace) -> int:
    session = args.session
    if sys.stdin.isatty():
        print(f"Chatting through {args.url}. Ctrl-D quits; Ctrl-C stops showing an answer.")
    while True:
        try:
            line = input("you> " if sys.stdin.isatty() else "")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not line.strip():
            continue
        body = {"message": line, "user_id": args.user, "stream": True}
        if session:
            body["session_id"] = session
        session = _stream(http, "POST", "/chat", body) or session


def sessions(http: httpx.Client, args: argparse.Namespace) -> int:
    page = _check(http.get("/chat/sessions", params={"user_id": args.user, "limit": 200})).json()
    for item in page["items"]:
        star = "*" if item["is_favorite"] else " "
        print(f"{star} {item['id']}  {item['updated_at'][:16].replace('T', ' ')}  {item['title']}")
    return 0


def show(http: httpx.Client, args: argparse.Namespace) -> int:
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 200} | ({"cursor": cursor} if cursor else {})
        page = _check(http.get(f"/chat/sessions/{args.id}/messages", params=params)).json()
        for message in page["items"]:
            marker = "" if message["status"] == "complete" else f" [{message['status']}]"
            print(f"{message['role']}{marker}: {message['content']}\n")
        if not (cursor := page["next_cursor"]):
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
    _check(http.delete(f"/chat/sessions/{args.id}"))
    print("deleted")
    return 0


def resume(http: httpx.Client, args: argparse.Namespace) -> int:
    """Resume an answer by its id, or a session's last answer by the session's id."""
    try:
        _stream(http, "POST", f"/chat/messages/{args.id}/resume")
    except ApiError as exc:
        if not str(exc).startswith("404"):
            raise
        _stream(http, "POST", f"/chat/sessions/{args.id}/resume")
    return 0


def export(http: httpx.Client, args: argparse.Namespace) -> int:
    response = _check(http.get(f"/chat/sessions/{args.id}/export", params={"format": args.format}))
    sys.stdout.write(response.text if args.format == "md" else json.dumps(response.json(), indent=2) + "\n")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chat", description="Chat through the durable chat gateway.")
    parser.add_argument("--url", default=os.environ.get("CHAT_URL", "http://localhost:8100"), help="gateway URL")
    parser.add_argument("--key", default=os.environ.get("CHAT_API_KEY"), help="gateway key (CHAT_API_KEY)")
    parser.add_argument("--user", default=os.environ.get("CHAT_USER", os.environ.get("USER", "anonymous")))
    parser.add_argument("--session", help="continue this session (interactive mode)")
    commands = parser.add_subparsers(dest="command", metavar="command")
    commands.add_parser("sessions", help="list your sessions, favorites first")
    for name, text in (
        ("show", "print a session"),
        ("favorite", "toggle a session's favorite flag"),
        ("delete", "delete a session"),
        ("resume", "continue an interrupted answer (message or session id)"),
    ):
        commands.add_parser(name, help=text).add_argument("id")
    renaming = commands.add_parser("rename", help="rename a session")
    renaming.add_argument("id")
    renaming.add_argument("title")
    exporting = commands.add_parser("export", help="print a session as Markdown or JSON")
    exporting.add_argument("id")
    exporting.add_argument("--format", choices=["md", "json"], default="md")
    return parser


COMMANDS: dict[str | None, Callable[[httpx.Client, argparse.Namespace], int]] = {
    None: interactive,
    "sessions": sessions,
    "show": show,
    "rename": rename,
    "favorite": favorite,
    "delete": delete,
    "resume": resume,
    "export": export,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    headers = {"x-api-key": args.key} if args.key else {}
    # No read timeout: a slow first token is normal, and the answer is durable anyway.
    with httpx.Client(base_url=args.url, headers=headers, timeout=httpx.Timeout(30.0, read=None)) as http:
        try:
            return COMMANDS[args.command](http, args)
        except ApiError as exc:
            print(f"error: {exc}", file=sys.stderr)
        except httpx.TransportError as exc:
            print(f"error: cannot reach the gateway at {args.url}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
