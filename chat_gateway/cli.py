"""`chat`: a terminal client of the gateway (also `python -m chat_gateway.cli`).

Ctrl-C while an answer streams stops the display, not the answer: `chat resume` or `chat show` gets the rest.
"""

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import connect_sse

from shared.identity import USER_KEY_PREFIX

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
        body: dict[str, Any] = {"message": line, "stream": True} | _user(args)
        if session:
            body["session_id"] = session
        session = _stream(http, "POST", "/chat", body) or session


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


def usage(http: httpx.Client, args: argparse.Namespace) -> int:
    params = {name: value for name, value in (("since", args.since), ("until", args.until)) if value}
    report = _check(http.get("/usage", params=_user(args) | params)).json()
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
