import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from chat_gateway.answers.plan import ChatPlan
from chat_gateway.answers.service import Answers
from chat_gateway.chat.protocol import ChatRequest, ChatResponse
from chat_gateway.deps import AnswersDep, CallerDep
from shared import DomainError, ErrorBody, ErrorCode, MessageStatus
from shared.contract import MessageDetail
from shared.resources import MAX_OFFSET

router = APIRouter(prefix="/chat", tags=["chat"])

SSE_DOC: dict[str, object] = {
    "content": {"text/event-stream": {}},
    "description": "Events start, delta, tool_call (each call whole, after the text), done, error.",
}
FAILED_DOC = "The answer failed: its `error`, `session_id`, `message_id` and the `partial` text it had."
RESPONSES: dict[int | str, dict[str, object]] = {200: SSE_DOC, 502: {"model": ErrorBody, "description": FAILED_DOC}}


class AnswerFailed(DomainError):
    status_code = 502
    code = ErrorCode.ANSWER_FAILED


def _wants_stream(request: Request, asked: bool | None) -> bool:
    return bool(asked) or "text/event-stream" in request.headers.get("accept", "")


async def _events(answers: Answers, answer: MessageDetail, offset: int) -> AsyncIterator[ServerSentEvent]:
    start = {"session_id": str(answer.session_id), "message_id": str(answer.id), "offset": offset}
    yield ServerSentEvent(event="start", data=json.dumps(start), id=str(offset))
    async for event in answers.follow(answer.id, offset):
        if event.kind == "delta":
            # ``model``: on the first delta another model wrote, the answer gone on on it mid-answer.
            delta = {"text": event.text} if event.model is None else {"text": event.text, "model": event.model}
            yield ServerSentEvent(event="delta", data=json.dumps(delta), id=str(event.offset))
        elif event.kind == "done":
            # Each call whole, once stored, at the offsets after the text (StreamEvent).
            first = event.offset - len(event.tool_calls) + 1
            for at, call in enumerate(event.tool_calls, start=first):
                yield ServerSentEvent(event="tool_call", data=call.model_dump_json(), id=str(at))
            body = {"status": event.status, "finish_reason": event.finish_reason, "usage": event.usage}
            yield ServerSentEvent(event="done", data=json.dumps(body), id=str(event.offset))
        else:
            body = {"status": event.status, "error": event.error}
            yield ServerSentEvent(event="error", data=json.dumps(body), id=str(event.offset))


async def _respond(
    answers: Answers, answer: MessageDetail, request: Request, stream: bool | None, offset: int = 0
) -> EventSourceResponse | ChatResponse:
    if _wants_stream(request, stream):
        return EventSourceResponse(_events(answers, answer, offset), ping=15)
    final = await answers.outcome(answer.id)
    if final.status == MessageStatus.FAILED:
        raise AnswerFailed(
            f"the answer failed: {final.error}",
            error=final.error,
            session_id=str(final.session_id),
            message_id=str(final.id),
            partial=final.content,
        )
    return ChatResponse.of(final)


StreamQuery = Annotated[bool | None, Query(description="Answer with Server-Sent Events.")]


@router.post("", responses=RESPONSES, response_model=ChatResponse)
async def chat(
    body: ChatRequest,
    request: Request,
    caller: CallerDep,
    answers: AnswersDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> EventSourceResponse | ChatResponse:
    """Ask a question: JSON by default, Server-Sent Events with stream=true or Accept: text/event-stream."""
    answer = await answers.start_chat(ChatPlan(body, caller), idempotency_key)
    return await _respond(answers, answer, request, body.stream)


@router.get("/messages/{message_id}/stream", responses={200: SSE_DOC})
async def reattach(
    message_id: uuid.UUID,
    caller: CallerDep,
    answers: AnswersDep,
    offset: Annotated[int | None, Query(ge=0, le=MAX_OFFSET)] = None,
    last_event_id: Annotated[int | None, Header(ge=0, le=MAX_OFFSET)] = None,
) -> EventSourceResponse:
    """Replay an answer from an offset (or Last-Event-ID), then follow it live until it ends."""
    start = offset if offset is not None else last_event_id or 0
    answer = await answers.reattach(message_id, start, caller.scope())
    return EventSourceResponse(_events(answers, answer, start), ping=15)


@router.post("/messages/{message_id}/cancel")
async def cancel(message_id: uuid.UUID, caller: CallerDep, answers: AnswersDep) -> ChatResponse:
    """Stop an answer: its partial text is kept and it ends failed with error 'cancelled' (resumable)."""
    final = await answers.cancel(message_id, caller.scope())
    return ChatResponse.of(final)


@router.post("/messages/{message_id}/resume", responses=RESPONSES, response_model=ChatResponse)
async def resume_message(
    message_id: uuid.UUID, request: Request, caller: CallerDep, answers: AnswersDep, stream: StreamQuery = None
) -> EventSourceResponse | ChatResponse:
    """Continue an interrupted answer from its saved partial text (409 if it cannot be resumed)."""
    answer = await answers.resume(message_id, caller)
    return await _respond(answers, answer, request, stream)


@router.post("/sessions/{session_id}/resume", responses=RESPONSES, response_model=ChatResponse)
async def resume_session(
    session_id: uuid.UUID, request: Request, caller: CallerDep, answers: AnswersDep, stream: StreamQuery = None
) -> EventSourceResponse | ChatResponse:
    """Continue the session's last answer from its saved partial text (409 if it cannot be resumed)."""
    answer = await answers.resume_session(session_id, caller)
    return await _respond(answers, answer, request, stream)
