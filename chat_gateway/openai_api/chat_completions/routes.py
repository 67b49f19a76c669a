"""OpenAI's Chat Completions (and its models), so OpenAI clients work by changing only their base_url: the
answers are served by serving.py, in the wire format of protocol.py."""

from typing import Annotated, Any

from fastapi import APIRouter, Header, Response
from fastapi.responses import JSONResponse, StreamingResponse

from chat_gateway.answers.service import Answers
from chat_gateway.deps import AnswersDep, CallerDep, CatalogDep
from chat_gateway.openai_api.chat_completions import serving as completions
from chat_gateway.openai_api.chat_completions.protocol import (
    ERROR_RESPONSES,
    PREFIX,
    CompletionRequest,
    answer_failed,
    completion,
)
from shared import MessageStatus
from shared.contract import MessageDetail

router = APIRouter(prefix=PREFIX, tags=["OpenAI-compatible"], responses=ERROR_RESPONSES)

SESSION_HEADER = "X-Session-Id"


async def _respond(answers: Answers, body: CompletionRequest, answer: MessageDetail) -> Response:
    # The model as the answer is stored: the one asked for, an alias resolved (chat_gateway/answers/parts.py).
    model = answer.model or body.model or answers.settings.openai_model
    headers = {SESSION_HEADER: str(answer.session_id)}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        stream = completions.chunks(answers, answer.id, model, include_usage)
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
    final, logprobs = await completions.whole(answers, answer)
    if final.status == MessageStatus.FAILED:
        return JSONResponse(answer_failed(final.error), status_code=502, headers=headers)
    return JSONResponse(completion(final, final.model or model, logprobs), headers=headers)


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: CompletionRequest,
    caller: CallerDep,
    answers: AnswersDep,
    x_session_id: Annotated[str | None, Header(max_length=255)] = None,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Response:
    """Chat Completions, streamed or not, in OpenAI's exact format; the session comes back in X-Session-Id."""
    answer = await completions.create(answers, caller, body, x_session_id, idempotency_key)
    return await _respond(answers, body, answer)


@router.get("/models")
async def list_models(catalog: CatalogDep) -> dict[str, Any]:
    """The upstream's models (cached briefly), else the default one, in OpenAI's list format."""
    return {"object": "list", "data": await catalog.models()}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, catalog: CatalogDep) -> dict[str, Any]:
    """One of the models, by id (ids may hold slashes: org/model)."""
    return await catalog.model(model_id)
