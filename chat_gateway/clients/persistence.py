"""The gateway's only way to the data: the persistence API, over one pooled httpx client.

Shaped as openai-python's client: one request method (``PersistenceClient._request``) sends, retries, turns
persistence's refusals into the gateway's errors and validates the reply into its ``cast_to``; the resource groups
(``sessions``, ``messages``, ``keys``, ``users``, ``usage``) say which request each of their methods is.
"""

import builtins
import logging
import uuid
from collections.abc import Mapping
from functools import partial
from typing import Any, Protocol, TypedDict, TypeVar, Unpack, overload
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter

from chat_gateway.clients import retry
from chat_gateway.clients.persistence_errors import PersistenceBusy, raise_for
from chat_gateway.clients.persistence_errors import PersistenceError as PersistenceError  # caught with the client
from shared import (
    Conflict,
    ErrorCode,
    JSONObject,
    MessageRead,
    MessageStatus,
    NotFound,
    OffsetMismatch,
    Page,
    SearchHit,
    ServiceUnavailable,
    SessionRead,
)
from shared.contract import (
    AnswerFinish,
    AppendRequest,
    AppendResult,
    ClaimRequest,
    ConversationFind,
    ConversationFound,
    FavoriteSet,
    MessageCreate,
    MessageDetail,
    MessageText,
    MessageUpdate,
    SessionCreate,
    SessionRename,
    SessionUpdate,
    TurnCreate,
    TurnStarted,
)
from shared.identity import (
    ON_BEHALF_OF,
    KeyCheck,
    KeyCreate,
    KeyCreated,
    KeyIdentity,
    KeyRead,
    Limits,
    TurnAccount,
    UsageReport,
    UserLimits,
)

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

UNREACHABLE = "the persistence service is unreachable: retry shortly"


class AnswerStore(Protocol):
    """What a generation needs of persistence's messages: its writes, and reads of its answer and of the history
    before it.

    ``PersistenceClient.messages`` is one; tests give a generation fakes of their own.
    """

    async def append(
        self,
        message_id: uuid.UUID,
        offset: int,
        text: str,
        *,
        owner: str,
        lease_seconds: float,
        finish: AnswerFinish | None = None,
        model: str | None = None,
    ) -> int: ...

    async def get(self, message_id: uuid.UUID, scope: str | None = None) -> MessageDetail: ...

    async def history_page(
        self, session_id: uuid.UUID, cursor: str | None, limit: int = 100
    ) -> tuple[list[MessageDetail], str | None]: ...


class _Options(TypedDict, total=False):
    """What a request carries besides its method and path."""

    on_behalf_of: str | None  # the user it is made for (a user's own credential): see ``PersistenceClient``
    params: Mapping[str, Any] | None
    body: BaseModel | JSONObject | None  # a model sends only the fields that were set; a dict is sent as it is
    headers: dict[str, str] | None


class PersistenceClient:
    """The persistence API as resource groups, each method one request through ``_request`` (or ``_send``).

    A request made ``on_behalf_of`` a user is answered by persistence as if nobody else's sessions and messages
    existed; the methods take that user as ``scope``.
    """

    def __init__(self, http: httpx.AsyncClient, *, attempts: int, initial_wait: float, max_wait: float) -> None:
        self.http = http
        self._base = str(http.base_url).rstrip("/")
        self._attempts = attempts
        self._initial_wait = initial_wait
        self._max_wait = max_wait
        self.sessions = Sessions(self)
        self.messages = Messages(self)
        self.keys = Keys(self)
        self.users = Users(self)
        self.usage = Usage(self)

    @overload
    async def _request(self, method: str, path: str, *, cast_to: type[M], **options: Unpack[_Options]) -> M: ...

    @overload
    async def _request(self, method: str, path: str, *, cast_to: TypeAdapter[T], **options: Unpack[_Options]) -> T: ...

    async def _request(
        self, method: str, path: str, *, cast_to: type[BaseModel] | TypeAdapter[Any], **options: Unpack[_Options]
    ) -> Any:
        """``_send``'s reply validated into ``cast_to``: a model, or a ``TypeAdapter`` for a list."""
        response = await self._send(method, path, **options)
        # Parsed and validated in one pass by pydantic-core: json.loads, then validating its dicts, cost twice it.
        if isinstance(cast_to, TypeAdapter):
            return cast_to.validate_json(response.content) if response.content else cast_to.validate_python(None)
        return cast_to.model_validate_json(response.content) if response.content else cast_to.model_validate(None)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        on_behalf_of: str | None = None,
        params: Mapping[str, Any] | None = None,
        body: BaseModel | JSONObject | None = None,
        headers: dict[str, str] | None = None,
        retried: bool = True,
    ) -> httpx.Response:
        """Send, retried on connection errors, 5xx and 429; every write carries an id or offset, so retries are safe.

        Persistence's refusals are raised as the gateway's errors; the response is for replies read by status
        (a 304, a 201) or not as JSON.
        """
        if on_behalf_of is not None:
            headers = (headers or {}) | {ON_BEHALF_OF: quote(on_behalf_of, safe="")}
        json, content = body, None
        if isinstance(body, BaseModel):  # serialised by pydantic-core, not dumped to dicts for json.dumps
            json, content = None, body.model_dump_json(exclude_unset=True)
            headers = (headers or {}) | {"Content-Type": "application/json"}
        url = self._base + path  # whole: httpx parsed a path, then the base URL joined with it, again
        send = partial(self.http.request, method, url, params=params, content=content, json=json, headers=headers)
        if not retried:
            response = await send()
            raise_for(response)
            return response
        try:
            async for attempt in retry.persistence(self._attempts, self._initial_wait, self._max_wait):
                with attempt:
                    response = await send()
                    # A 429 too: persistence's own rate limit (RATE_LIMIT) is a wait, not a refusal.
                    if response.status_code >= 500 or response.status_code == 429:
                        raise PersistenceBusy(response)
        except (PersistenceBusy, httpx.TransportError) as exc:
            # Where persistence lives is the operator's business: the log says it, clients are told what failed.
            logger.warning("persistence unreachable: %s %s: %r", method, path, exc)
            raise ServiceUnavailable(UNREACHABLE, code=ErrorCode.PERSISTENCE_UNAVAILABLE) from exc
        raise_for(response)
        return response

    async def ready(self) -> bool:
        try:
            return (await self.http.get("/health/ready")).is_success
        except httpx.TransportError:
            return False


class _Resource:
    """A group of persistence's endpoints, each method one request through its client."""

    def __init__(self, client: PersistenceClient) -> None:
        self._request = client._request
        self._send = client._send


_MESSAGE_LIST = TypeAdapter(list[MessageDetail])
_KEY_LIST = TypeAdapter(list[KeyRead])
_JSON_OBJECT = TypeAdapter(JSONObject)


class Sessions(_Resource):
    async def list(self, params: dict[str, Any], scope: str | None = None) -> Page[SessionRead]:
        return await self._request("GET", "/sessions", cast_to=Page[SessionRead], params=params, on_behalf_of=scope)

    async def search(self, params: dict[str, Any], scope: str | None = None) -> Page[SearchHit]:
        return await self._request("GET", "/search", cast_to=Page[SearchHit], params=params, on_behalf_of=scope)

    async def get(self, session_id: uuid.UUID, scope: str | None = None) -> SessionRead:
        return await self._request("GET", f"/sessions/{session_id}", cast_to=SessionRead, on_behalf_of=scope)

    async def create(self, body: SessionCreate, scope: str | None = None) -> SessionRead:
        return await self._request("POST", "/sessions", cast_to=SessionRead, body=body, on_behalf_of=scope)

    async def rename(self, session_id: uuid.UUID, body: SessionRename, scope: str | None = None) -> SessionRead:
        path = f"/sessions/{session_id}"
        return await self._request("PUT", path, cast_to=SessionRead, body=body, on_behalf_of=scope)

    async def update(self, session_id: uuid.UUID, body: SessionUpdate, scope: str | None = None) -> SessionRead:
        path = f"/sessions/{session_id}"
        return await self._request("PATCH", path, cast_to=SessionRead, body=body, on_behalf_of=scope)

    async def favorite(
        self, session_id: uuid.UUID, params: dict[str, bool], body: FavoriteSet | None, scope: str | None = None
    ) -> SessionRead:
        path = f"/sessions/{session_id}/favorite"
        return await self._request("PATCH", path, cast_to=SessionRead, params=params, body=body, on_behalf_of=scope)

    async def delete(self, session_id: uuid.UUID, scope: str | None = None) -> None:
        await self._send("DELETE", f"/sessions/{session_id}", on_behalf_of=scope)

    async def export(self, session_id: uuid.UUID, fmt: str, scope: str | None = None) -> httpx.Response:
        """The export as persistence sent it (JSON or Markdown), errors raised as usual."""
        # Sent once, as exports always were: which calls are retried is not this client's shape to change.
        path = f"/sessions/{session_id}/export"
        return await self._send("GET", path, params={"format": fmt}, on_behalf_of=scope, retried=False)

    async def import_(self, document: JSONObject) -> JSONObject:
        return await self._request("POST", "/sessions/import", cast_to=_JSON_OBJECT, body=document)

    async def find(self, body: ConversationFind, scope: str | None = None) -> ConversationFound | None:
        """The session a client's resent conversation goes on in, or None: a new conversation."""
        try:
            return await self._request(
                "POST", "/conversations/find", cast_to=ConversationFound, body=body, on_behalf_of=scope
            )
        except NotFound:
            return None


class Messages(_Resource):
    async def list(self, session_id: uuid.UUID, params: dict[str, Any], scope: str | None = None) -> Page[MessageRead]:
        path = f"/sessions/{session_id}/messages"
        return await self._request("GET", path, cast_to=Page[MessageRead], params=params, on_behalf_of=scope)

    async def get(self, message_id: uuid.UUID, scope: str | None = None) -> MessageDetail:
        return await self._request("GET", f"/messages/{message_id}", cast_to=MessageDetail, on_behalf_of=scope)

    async def create(self, session_id: uuid.UUID, body: MessageCreate, scope: str | None = None) -> MessageDetail:
        path = f"/sessions/{session_id}/messages"
        return await self._request("POST", path, cast_to=MessageDetail, body=body, on_behalf_of=scope)

    async def update(
        self, message_id: uuid.UUID, changes: MessageUpdate, *, if_match: int | None = None
    ) -> MessageDetail:
        """Change a message; with ``if_match``, only while it is still at that version (else PreconditionFailed)."""
        headers = {"If-Match": f'"{if_match}"'} if if_match is not None else None
        path = f"/messages/{message_id}"
        return await self._request("PATCH", path, cast_to=MessageDetail, body=changes, headers=headers)

    async def delete(self, message_id: uuid.UUID, scope: str | None = None) -> None:
        await self._send("DELETE", f"/messages/{message_id}", on_behalf_of=scope)

    async def last(self, session_id: uuid.UUID, role: str | None, scope: str | None = None) -> MessageDetail:
        params = {"role": role} if role is not None else None
        path = f"/sessions/{session_id}/messages/last"
        return await self._request("GET", path, cast_to=MessageDetail, params=params, on_behalf_of=scope)

    async def history_page(
        self, session_id: uuid.UUID, cursor: str | None, limit: int = 100
    ) -> tuple[builtins.list[MessageDetail], str | None]:
        """Complete messages, newest first."""
        params: dict[str, Any] = {"order": "desc", "status": MessageStatus.COMPLETE.value, "limit": limit}
        if cursor:
            params["cursor"] = cursor
        page = await self._request(
            "GET", f"/sessions/{session_id}/messages", cast_to=Page[MessageDetail], params=params
        )
        return page.items, page.next_cursor

    async def poll_text(self, message_id: uuid.UUID, offset: int, version: int | None) -> MessageText | None:
        """The answer's text from ``offset`` on, or None while it is still at ``version`` (then no body is sent)."""
        headers = {"If-None-Match": f'"{version}"'} if version is not None else None
        response = await self._send("GET", f"/messages/{message_id}/text", params={"offset": offset}, headers=headers)
        return None if response.status_code == 304 else MessageText.model_validate_json(response.content)

    async def start_turn(
        self, session_id: uuid.UUID, body: TurnCreate, scope: str | None = None
    ) -> tuple[MessageDetail, bool]:
        """Store a question and its answer; returns the answer and whether the turn is new (else a replay)."""
        response = await self._send("POST", f"/sessions/{session_id}/turns", body=body, on_behalf_of=scope)
        return TurnStarted.model_validate_json(response.content).answer, response.status_code == 201

    async def append(
        self,
        message_id: uuid.UUID,
        offset: int,
        text: str,
        *,
        owner: str,
        lease_seconds: float,
        finish: AnswerFinish | None = None,
        model: str | None = None,
    ) -> int:
        """Append at ``offset`` (and end the answer, with ``finish``); returns the new length. With ``model``, the
        model that writes from ``offset`` on: another than the last part's begins a part there.

        A lost response retried is recognised, not doubled.
        """
        body = AppendRequest(offset=offset, text=text, owner=owner)
        if model is not None:
            body.model = model
        if finish is None:
            body.lease_seconds = lease_seconds
        else:  # an ended answer holds no lease
            body.finish = finish
        try:
            result = await self._request("POST", f"/messages/{message_id}/append", cast_to=AppendResult, body=body)
        except Conflict as exc:
            # Our earlier try landed but its answer was lost: the length already includes this text.
            landed = exc.extra.get("length") == offset + len(text)
            if landed and isinstance(exc, OffsetMismatch) and finish is None:
                return offset + len(text)
            if landed and finish is not None and exc.extra.get("status") == finish.status:
                return offset + len(text)
            raise
        return result.length

    async def claim(
        self, message_id: uuid.UUID, owner: str, lease_seconds: float, *, if_match: int | None = None
    ) -> MessageDetail:
        """Take the answer's lease; with ``if_match``, only while it is still at that version (else
        PreconditionFailed)."""
        body = ClaimRequest(owner=owner, lease_seconds=lease_seconds)
        headers = {"If-Match": f'"{if_match}"'} if if_match is not None else None
        path = f"/messages/{message_id}/claim"
        return await self._request("POST", path, cast_to=MessageDetail, body=body, headers=headers)

    async def stale(self, owner: str, limit: int = 50) -> builtins.list[MessageDetail]:
        """Orphaned answers, and those ``owner`` holds (taken back by a gateway restarted under its name)."""
        params = {"limit": limit, "owner": owner}
        return await self._request("GET", "/messages/stale", cast_to=_MESSAGE_LIST, params=params)


# Identity: user keys, limits, usage (persistence keeps them; the gateway decides who may see them).


class Keys(_Resource):
    async def identify(self, key: str) -> KeyIdentity | None:
        """Whom a user key belongs to; None for a key persistence refuses (unknown, revoked, expired)."""
        try:
            return await self._request("POST", "/keys/identify", cast_to=KeyIdentity, body=KeyCheck(key=key))
        except PersistenceError as exc:
            # Only the key refused: a 401 for the gateway's own service key (misconfigured) is no user's fault.
            if exc.extra.get("persistence_code") in (ErrorCode.INVALID_USER_KEY, ErrorCode.KEY_EXPIRED):
                return None
            raise

    async def create(self, body: KeyCreate) -> KeyCreated:
        return await self._request("POST", "/keys", cast_to=KeyCreated, body=body)

    async def list(self, user_id: str | None) -> builtins.list[KeyRead]:
        params = {"user_id": user_id} if user_id is not None else None
        return await self._request("GET", "/keys", cast_to=_KEY_LIST, params=params)

    async def revoke(self, key_id: uuid.UUID) -> KeyRead:
        return await self._request("DELETE", f"/keys/{key_id}", cast_to=KeyRead)


class Users(_Resource):
    async def limits(self, user_id: str) -> Limits:
        return (await self._request("GET", f"/users/{quote(user_id, safe='')}/limits", cast_to=UserLimits)).limits

    async def set_limits(self, user_id: str, limits: Limits) -> UserLimits:
        # A PUT: every limit sent, null where the user has none of their own.
        path = f"/users/{quote(user_id, safe='')}/limits"
        return await self._request("PUT", path, cast_to=UserLimits, body=limits.model_dump())


class Usage(_Resource):
    async def reserve(self, message_id: uuid.UUID, account: TurnAccount) -> None:
        """Before an answer is resumed: its user's budgets checked (Conflict budget_exceeded), its run reserved."""
        await self._send("POST", f"/usage/{message_id}/reserve", body=account.model_dump())

    async def report(self, params: dict[str, Any]) -> UsageReport:
        return await self._request("GET", "/usage", cast_to=UsageReport, params=params)
