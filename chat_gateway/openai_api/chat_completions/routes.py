"""OpenAI's Chat Completions, so OpenAI clients work by changing only their base_url (the wire format:
chat_gateway/openai_api/chat_completions/protocol.py).

Every call is stored like /chat: only the new turn (the last, user, message) is stored, since OpenAI
clients send the whole history each time; the answer is durable the same way.
"""

import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Response
from fastapi.responses import JSONResponse, StreamingResponse
from openai.types.chat import ChatCompletionMessageParam

from chat_gateway.answers.events import StreamEvent
from chat_gateway.answers.service import Answers
from chat_gateway.deps import AnswersDep, CallerDep, CatalogDep, SettingsDep
from chat_gateway.openai_api.chat_completions.protocol import (
    ERROR_RESPONSES,
    PREFIX,
    ChunkFormat,
    CompletionRequest,
    answer_failed,
    chat_request,
    completion,
    new_inputs,
    sse,
)
from chat_gateway.openai_api.session_matching import conversation_key, find_session, request_key
from shared import MessageStatus

router = APIRouter(prefix=PREFIX, tags=["OpenAI-compatible"], responses=ERROR_RESPONSES)

SESSION_HEADER = "X-Session-Id"


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


async def _chunks(answers: Answers, message_id: uuid.UUID, model: str, include_usage: bool) -> AsyncIterator[str]:
    render = ChunkFormat(message_id, model, include_usage)
    yield render.chunk({"role": "assistant", "content": ""})
    event: StreamEvent
    async for event in answers.follow(message_id, 0):
        if event.kind == "delta":
            yield render.text(event.text, event.logprobs)
        elif event.kind == "done":
            for index, call in enumerate(event.tool_calls):
                yield render.tool_call(index, call)
            yield render.chunk({}, event.finish_reason or "stop")
            if include_usage:
                yield render.usage(event.usage)
            yield "data: [DONE]\n\n"
        else:
            failed = event.status == MessageStatus.FAILED
            message = f"the answer failed: {event.error}" if failed else str(event.error)
            yield sse({"error": {"message": message, "type": "api_error"}})


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: CompletionRequest,
    caller: CallerDep,
    answers: AnswersDep,
    settings: SettingsDep,
    x_session_id: Annotated[str | None, Header(max_length=255)] = None,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Response:
    """Chat Completions, streamed or not, in OpenAI's exact format; the session comes back in X-Session-Id."""
    question, results = new_inputs(body.messages)
    model = body.model or settings.openai_model
    prompt: list[ChatCompletionMessageParam] = [m.upstream() for m in body.messages]  # type: ignore[misc]
    # OpenAI's `user` names an end user of the client's own: it says whose chat it is only for an admin's key.
    acting_for = None if caller.is_user else body.user
    owner = caller.owner(acting_for)
    named, creates = _named_session(x_session_id, body, owner, settings.session_names_key)
    session_id = named
    if named is not None and not creates:  # an existing session, the caller's to write into (else a 404)
        await answers.persistence.sessions.get(named, caller.writes_into(acting_for))
    if (
        session_id is None
    ):  # the session that holds the conversation so far, if one does (openai_api/session_matching.py)
        earlier = body.messages[: len(body.messages) - len(results) - (question is not None)]
        session_id = await find_session(answers.persistence, owner, caller.user_id, earlier, results)
    request = chat_request(body, question, results, session_id, acting_for, model)
    key = conversation_key(owner, body.messages)
    options = request.options.given() if request.options is not None else {}
    retry_key = request_key(owner, named, prompt, model, options) if idempotency_key is None else None
    answer = await answers.start_chat(
        request,
        idempotency_key,
        caller=caller,
        prompt=prompt,
        create_session=True,
        conversation_key=key,
        request_key=retry_key,
        follows_added=named is None,
    )
    headers = {SESSION_HEADER: str(answer.session_id)}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        stream = _chunks(answers, answer.id, model, include_usage)
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
    generation = answers.generating(answer.id)  # its logprobs, if asked for: they are not stored
    final = await answers.outcome(answer.id)
    if final.status == MessageStatus.FAILED:
        return JSONResponse(answer_failed(final.error), status_code=502, headers=headers)
    logprobs = generation.logprobs if generation is not None else None
    return JSONResponse(completion(final, model, logprobs), headers=headers)


@router.get("/models")
async def list_models(catalog: CatalogDep) -> dict[str, Any]:
    """The upstream's models (cached briefly), else the default one, in OpenAI's list format."""
    return {"object": "list", "data": await catalog.models()}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, catalog: CatalogDep) -> dict[str, Any]:
    """One of the models, by id (ids may hold slashes: org/model)."""
    return await catalog.model(model_id)
