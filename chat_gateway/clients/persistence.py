"""The gateway's only way to the data: the persistence API, over one pooled httpx client."""

import logging
import uuid
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from chat_gateway.clients import retry
from chat_gateway.clients.retry import Transient
from shared import (
    Conflict,
    DomainError,
    ErrorCode,
    JSONObject,
    MessageRead,
    MessageStatus,
    NotFound,
    OffsetMismatch,
    Page,
    PreconditionFailed,
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

UNREACHABLE = "the persistence service is unreachable: retry shortly"


class PersistenceBusy(Transient):
    """A 5xx or 429 from persistence: worth another try."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"persistence answered {response.status_code}")
        self.response = response


class PersistenceError(DomainError):
    """Persistence refused a request for good: a 4xx that no retry changes."""

    status_code = 502
    code = ErrorCode.PERSISTENCE_ERROR


# Persistence found a value invalid: when the gateway relays a client's values, the client's to fix.
_INVALID_VALUE = frozenset({400, 413, 422})


def _body(model: BaseModel) -> JSONObject:
    """A request body as JSON: only the fields that were set (those unset keep persistence's defaults)."""
    return model.model_dump(mode="json", exclude_unset=True)


def _on_behalf_of(scope: str | None) -> dict[str, str] | None:
    return {ON_BEHALF_OF: quote(scope, safe="")} if scope is not None else None


def _raise_for(response: httpx.Response) -> None:
    if response.is_success or response.status_code == 304:  # a 304 answers only a request that asked for it
        return
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        body = {}
    detail = str(body.pop("detail", response.text[:200]))
    code = ErrorCode.parse(body.pop("code", None))
    if code == ErrorCode.OFFSET_MISMATCH and isinstance(length := body.pop("length", None), int):
        raise OffsetMismatch(detail, length=length, **body)
    if response.status_code == 404:
        raise NotFound(detail, code=code, **body)
    if response.status_code == 409:
        raise Conflict(detail, code=code, **body)
    if response.status_code == 412:
        raise PreconditionFailed(detail, code=code, **body)
    error = PersistenceError(
        f"persistence rejected a request: {detail}", persistence_status=response.status_code, persistence_code=code
    )
    if response.status_code in _INVALID_VALUE:  # a 4xx, not a 502 for a bad gateway
        error.status_code, error.code = response.status_code, code or error.code
    raise error


class AnswerStore(Protocol):
    """What a generation needs of persistence: its writes, and reads of its answer and of the history before it.

    ``PersistenceClient`` is one; tests give a generation fakes of their own.
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
    ) -> int: ...

    async def get_message(self, message_id: uuid.UUID, scope: str | None = None) -> MessageDetail: ...

    async def history_page(
        self, session_id: uuid.UUID, cursor: str | None, limit: int = 100
    ) -> tuple[list[MessageDetail], str | None]: ...


class PersistenceClient:
    def __init__(self, http: httpx.AsyncClient, *, attempts: int, initial_wait: float, max_wait: float) -> None:
        self.http = http
        self._attempts = attempts
        self._initial_wait = initial_wait
        self._max_wait = max_wait

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON body of ``_send``'s response (None when empty)."""
        response = await self._send(method, path, **kwargs)
        return response.json() if response.content else None

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send, retried on connection errors, 5xx and 429; every write carries an id or offset, so retries are safe."""
        try:
            async for attempt in retry.persistence(self._attempts, self._initial_wait, self._max_wait):
                with attempt:
                    response = await self.http.request(method, path, **kwargs)
                    # A 429 too: persistence's own rate limit (RATE_LIMIT) is a wait, not a refusal.
                    if response.status_code >= 500 or response.status_code == 429:
                        raise PersistenceBusy(response)
        except (PersistenceBusy, httpx.TransportError) as exc:
            # Where persistence lives is the operator's business: the log says it, clients are told what failed.
            logger.warning("persistence unreachable: %s %s: %r", method, path, exc)
            raise ServiceUnavailable(UNREACHABLE, code=ErrorCode.PERSISTENCE_UNAVAILABLE) from exc
        _raise_for(response)
        return response

    async def ready(self) -> bool:
        try:
            return (await self.http.get("/health/ready")).is_success
        except httpx.TransportError:
            return False

    # ``scope``: the user a request is made for (a user's own credential): persistence then answers as if
    # nobody else's sessions and messages existed.

    async def list_sessions(self, params: dict[str, Any], scope: str | None = None) -> Page[SessionRead]:
        data = await self._request("GET", "/sessions", params=params, headers=_on_behalf_of(scope))
        return Page[SessionRead].model_validate(data)

    async def search(self, params: dict[str, Any], scope: str | None = None) -> Page[SearchHit]:
        data = await self._request("GET", "/search", params=params, headers=_on_behalf_of(scope))
        return Page[SearchHit].model_validate(data)

    async def get_session(self, session_id: uuid.UUID, scope: str | None = None) -> SessionRead:
        data = await self._request("GET", f"/sessions/{session_id}", headers=_on_behalf_of(scope))
        return SessionRead.model_validate(data)

    async def list_messages(
        self, session_id: uuid.UUID, params: dict[str, Any], scope: str | None = None
    ) -> Page[MessageRead]:
        data = await self._request(
            "GET", f"/sessions/{session_id}/messages", params=params, headers=_on_behalf_of(scope)
        )
        return Page[MessageRead].model_validate(data)

    async def rename_session(self, session_id: uuid.UUID, body: SessionRename, scope: str | None = None) -> SessionRead:
        data = await self._request("PUT", f"/sessions/{session_id}", json=_body(body), headers=_on_behalf_of(scope))
        return SessionRead.model_validate(data)

    async def favorite_session(
        self, session_id: uuid.UUID, params: dict[str, bool], body: FavoriteSet | None, scope: str | None = None
    ) -> SessionRead:
        json = _body(body) if body is not None else None
        data = await self._request(
            "PATCH", f"/sessions/{session_id}/favorite", params=params, json=json, headers=_on_behalf_of(scope)
        )
        return SessionRead.model_validate(data)

    async def delete_session(self, session_id: uuid.UUID, scope: str | None = None) -> None:
        await self._request("DELETE", f"/sessions/{session_id}", headers=_on_behalf_of(scope))

    async def create_session(self, body: SessionCreate, scope: str | None = None) -> SessionRead:
        data = await self._request("POST", "/sessions", json=_body(body), headers=_on_behalf_of(scope))
        return SessionRead.model_validate(data)

    async def update_session(self, session_id: uuid.UUID, body: SessionUpdate, scope: str | None = None) -> SessionRead:
        path = f"/sessions/{session_id}"
        data = await self._request("PATCH", path, json=_body(body), headers=_on_behalf_of(scope))
        return SessionRead.model_validate(data)

    async def create_message(
        self, session_id: uuid.UUID, body: MessageCreate, scope: str | None = None
    ) -> MessageDetail:
        path = f"/sessions/{session_id}/messages"
        data = await self._request("POST", path, json=_body(body), headers=_on_behalf_of(scope))
        return MessageDetail.model_validate(data)

    async def delete_message(self, message_id: uuid.UUID, scope: str | None = None) -> None:
        await self._request("DELETE", f"/messages/{message_id}", headers=_on_behalf_of(scope))

    async def export_session(self, session_id: uuid.UUID, fmt: str, scope: str | None = None) -> httpx.Response:
        """The export as persistence sent it (JSON or Markdown), errors raised as usual."""
        response = await self.http.get(
            f"/sessions/{session_id}/export", params={"format": fmt}, headers=_on_behalf_of(scope)
        )
        _raise_for(response)
        return response

    async def import_session(self, document: JSONObject) -> JSONObject:
        result: JSONObject = await self._request("POST", "/sessions/import", json=document)
        return result

    async def get_message(self, message_id: uuid.UUID, scope: str | None = None) -> MessageDetail:
        data = await self._request("GET", f"/messages/{message_id}", headers=_on_behalf_of(scope))
        return MessageDetail.model_validate(data)

    async def poll_text(self, message_id: uuid.UUID, offset: int, version: int | None) -> MessageText | None:
        """The answer's text from ``offset`` on, or None while it is still at ``version`` (then no body is sent)."""
        headers = {"If-None-Match": f'"{version}"'} if version is not None else None
        response = await self._send("GET", f"/messages/{message_id}/text", params={"offset": offset}, headers=headers)
        return None if response.status_code == 304 else MessageText.model_validate(response.json())

    async def last_message(self, session_id: uuid.UUID, role: str | None, scope: str | None = None) -> MessageDetail:
        params = {"role": role} if role is not None else None
        data = await self._request(
            "GET", f"/sessions/{session_id}/messages/last", params=params, headers=_on_behalf_of(scope)
        )
        return MessageDetail.model_validate(data)

    async def history_page(
        self, session_id: uuid.UUID, cursor: str | None, limit: int = 100
    ) -> tuple[list[MessageDetail], str | None]:
        """Complete messages, newest first."""
        params: dict[str, Any] = {"order": "desc", "status": MessageStatus.COMPLETE.value, "limit": limit}
        if cursor:
            params["cursor"] = cursor
        page = await self._request("GET", f"/sessions/{session_id}/messages", params=params)
        return [MessageDetail.model_validate(item) for item in page["items"]], page["next_cursor"]

    async def start_turn(
        self, session_id: uuid.UUID, body: TurnCreate, scope: str | None = None
    ) -> tuple[MessageDetail, bool]:
        """Store a question and its answer; returns the answer and whether the turn is new (else a replay)."""
        path = f"/sessions/{session_id}/turns"
        response = await self._send("POST", path, json=_body(body), headers=_on_behalf_of(scope))
        return MessageDetail.model_validate(response.json()["answer"]), response.status_code == 201

    async def find_conversation(self, body: ConversationFind, scope: str | None = None) -> ConversationFound | None:
        """The session a client's resent conversation goes on in, or None: a new conversation."""
        try:
            data = await self._request("POST", "/conversations/find", json=_body(body), headers=_on_behalf_of(scope))
        except NotFound:
            return None
        return ConversationFound.model_validate(data)

    async def update_message(
        self, message_id: uuid.UUID, changes: MessageUpdate, *, if_match: int | None = None
    ) -> MessageDetail:
        """Change a message; with ``if_match``, only while it is still at that version (else PreconditionFailed)."""
        headers = {"If-Match": f'"{if_match}"'} if if_match is not None else None
        data = await self._request("PATCH", f"/messages/{message_id}", json=_body(changes), headers=headers)
        return MessageDetail.model_validate(data)

    async def append(
        self,
        message_id: uuid.UUID,
        offset: int,
        text: str,
        *,
        owner: str,
        lease_seconds: float,
        finish: AnswerFinish | None = None,
    ) -> int:
        """Append at ``offset`` (and end the answer, with ``finish``); returns the new length.

        A lost response retried is recognised, not doubled.
        """
        body = AppendRequest(offset=offset, text=text, owner=owner)
        if finish is None:
            body.lease_seconds = lease_seconds
        else:  # an ended answer holds no lease
            body.finish = finish
        try:
            result = AppendResult.model_validate(
                await self._request("POST", f"/messages/{message_id}/append", json=_body(body))
            )
        except Conflict as exc:
            # Our earlier try landed but its answer was lost: the length already includes this text.
            landed = exc.extra.get("length") == offset + len(text)
            if landed and isinstance(exc, OffsetMismatch) and finish is None:
                return offset + len(text)
            if landed and finish is not None and exc.extra.get("status") == finish.status:
                return offset + len(text)
            raise
        return result.length

    async def claim(self, message_id: uuid.UUID, owner: str, lease_seconds: float) -> MessageDetail:
        body = ClaimRequest(owner=owner, lease_seconds=lease_seconds)
        data = await self._request("POST", f"/messages/{message_id}/claim", json=_body(body))
        return MessageDetail.model_validate(data)

    # Identity: user keys, limits, usage (persistence keeps them; the gateway decides who may see them).

    async def identify_key(self, key: str) -> KeyIdentity | None:
        """Whom a user key belongs to; None for a key persistence refuses (unknown, revoked, expired)."""
        try:
            data = await self._request("POST", "/keys/identify", json=_body(KeyCheck(key=key)))
            return KeyIdentity.model_validate(data)
        except PersistenceError as exc:
            # Only the key refused: a 401 for the gateway's own service key (misconfigured) is no user's fault.
            if exc.extra.get("persistence_code") in (ErrorCode.INVALID_USER_KEY, ErrorCode.KEY_EXPIRED):
                return None
            raise

    async def user_limits(self, user_id: str) -> Limits:
        data = await self._request("GET", f"/users/{quote(user_id, safe='')}/limits")
        return UserLimits.model_validate(data).limits

    async def set_user_limits(self, user_id: str, limits: Limits) -> UserLimits:
        data = await self._request("PUT", f"/users/{quote(user_id, safe='')}/limits", json=limits.model_dump())
        return UserLimits.model_validate(data)

    async def create_key(self, body: KeyCreate) -> KeyCreated:
        return KeyCreated.model_validate(await self._request("POST", "/keys", json=_body(body)))

    async def list_keys(self, user_id: str | None) -> list[KeyRead]:
        params = {"user_id": user_id} if user_id is not None else None
        return [KeyRead.model_validate(item) for item in await self._request("GET", "/keys", params=params)]

    async def revoke_key(self, key_id: uuid.UUID) -> KeyRead:
        return KeyRead.model_validate(await self._request("DELETE", f"/keys/{key_id}"))

    async def reserve(self, message_id: uuid.UUID, account: TurnAccount) -> None:
        """Before an answer is resumed: its user's budgets checked (Conflict budget_exceeded), its run reserved."""
        await self._request("POST", f"/usage/{message_id}/reserve", json=account.model_dump())

    async def usage(self, params: dict[str, Any]) -> UsageReport:
        return UsageReport.model_validate(await self._request("GET", "/usage", params=params))

    async def stale(self, owner: str, limit: int = 50) -> list[MessageDetail]:
        """Orphaned answers, and those ``owner`` holds (taken back by a gateway restarted under its name)."""
        data = await self._request("GET", "/messages/stale", params={"limit": limit, "owner": owner})
        return [MessageDetail.model_validate(item) for item in data]
