"""`chat admin`: user keys and limits, with an admin key."""

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from chat_gateway.cli.following import check


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
    created = check(http.post("/admin/keys", json=body)).json()
    print(created["key"])
    print(f"(the key of {created['user_id']}, id {created['id']}: shown this once, keep it)", file=sys.stderr)
    return 0


def keys_list(http: httpx.Client, args: argparse.Namespace) -> int:
    params = {"user_id": args.for_user} if args.for_user else None
    listed = check(http.get("/admin/keys", params=params)).json()
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
    revoked = check(http.delete(f"/admin/keys/{args.id}")).json()
    print(f"revoked {revoked['prefix']}... of {revoked['user_id']}")
    return 0


def limits_set(http: httpx.Client, args: argparse.Namespace) -> int:
    """Show a user's limits, changing those given (0 removes one: the default applies again)."""
    path = f"/admin/users/{quote(args.for_user, safe='')}/limits"
    limits = check(http.get(path)).json()["limits"]
    if changes := _limits(args):
        limits |= {name: value or None for name, value in changes.items()}
        limits = check(http.put(path, json=limits)).json()["limits"]
    print(json.dumps(limits))
    return 0


def _limit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rpm", type=int, help="requests per minute")
    parser.add_argument("--tokens-per-day", type=int)
    parser.add_argument("--tokens-per-month", type=int)
    parser.add_argument("--budget", type=_budget, help="a token budget: N/day or N/month (N alone: per month)")


def add_parser_to(commands: Any) -> None:
    """`chat admin ...`, among ``commands`` (the main parser's subparsers)."""
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


def run(http: httpx.Client, args: argparse.Namespace) -> int:
    return ACTIONS[(args.area, getattr(args, "action", None))](http, args)


ACTIONS: dict[tuple[str, str | None], Callable[[httpx.Client, argparse.Namespace], int]] = {
    ("keys", "create"): keys_create,
    ("keys", "list"): keys_list,
    ("keys", "revoke"): keys_revoke,
    ("limits", None): limits_set,
}
