"""Chat Completions over durable answers: starting one (chat_start.py's path, the session a request names or
the one that holds its conversation), and its answer streamed as chunks or whole (the wire format: protocol.py).

Every call is stored like /chat: only the new turn (the last, user, message) is stored, since OpenAI
clients send the whole history each time; the answer is durable the same way.
"""

import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator

from chat_gateway.answers.events import StreamEvent
from chat_gateway.answers.service import Answers
from chat_gateway.auth.identity import Caller
from chat_gateway.openai_api import chat_start
from chat_gateway.openai_api.chat_completions.protocol import (
    ChunkFormat,
    CompletionRequest,
    sse,
)
from shared import JSONObject, MessageStatus
from shared.contract import MessageDetail


def _named_session(
    header: str | None, body: CompletionRequest, owner: str, key: bytes
) -> tuple[uuid.UUID | None, bool]:
    """The session a request names (X-Session-Id, else metadata.session_id), and whether it may be created.

    A UUID names a session that exists (ids are the server's: one sent back in X-Session-Id); nobody creates a
    session at an id of their choosing. Any other name is the owner's: it maps to an id through a keyed hash
    (HMAC, SESSION_NAME_SECRET), so nobody computes the id of another's name to take it first, and that session
    is created when it does not exist.
    """
    name = header or (body.metadata or {}).get("session_id")
    if not name:
        return None, False
    try:
        return uuid.UUID(name), False
    except ValueError:
        digest = hmac.new(key, f"{owner}\x00{name}".encode(), hashlib.sha256).digest()
        return uuid.UUID(bytes=digest[:16], version=4), True


async def create(
    answers: Answers, caller: Caller, body: CompletionRequest, session: str | None, idempotency_key: str | None
) -> MessageDetail:
    """Store the request's new messages and their answer, and start generating it."""
    # OpenAI's `user` names an end user of the client's own: it says whose chat it is only for an admin's key.
    acting_for = None if caller.is_user else body.user
    named, creates = _named_session(session, body, caller.owner(acting_for), answers.settings.session_names_key)
    how = chat_start.ChatStart(
        acting_for,
        session_id=named,
        must_exist=named is not None and not creates,
        named=named,
        follows_added=named is None,
    )
    return await chat_start.start(answers, caller, body, body.messages, how, idempotency_key)


async def chunks(answers: Answers, message_id: uuid.UUID, model: str, include_usage: bool) -> AsyncIterator[str]:
    """The answer's ``chat.completion.chunk`` events, live until it ends."""
    render = ChunkFormat(message_id, model, include_usage)
    yield render.chunk({"role": "assistant", "content": ""})
    event: StreamEvent
    async for event in answers.follow(message_id, 0):
        if event.kind == "delta":
            if event.model is not None:  # another model goes on with the answer: its chunks name it
                render.written_by(event.model)
            yield render.text(event.text, event.logprobs)
        elif event.kind == "done":  # its chunks in one write
            calls = [render.tool_call(index, call) for index, call in enumerate(event.tool_calls)]
            usage = [render.usage(event.usage)] if include_usage else []
            yield "".join([*calls, render.chunk({}, event.finish_reason or "stop"), *usage, "data: [DONE]\n\n"])
        else:
            failed = event.status == MessageStatus.FAILED
            message = f"the answer failed: {event.error}" if failed else str(event.error)
            yield sse({"error": {"message": message, "type": "api_error"}})


async def whole(answers: Answers, answer: MessageDetail) -> tuple[MessageDetail, list[JSONObject] | None]:
    """The answer once it has ended, and its logprobs if they were asked for (relayed live, not stored)."""
    generation = answers.generating(answer.id)
    final = await answers.outcome(answer.id)
    return final, generation.logprobs if generation is not None else None
