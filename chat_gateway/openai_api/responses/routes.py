"""OpenAI's Responses API (POST /v1/responses and the routes on one response), over durable answers: any
gateway serves any response, its events resumable from any sequence number (serving.py).

Its answers are documented by the SDK's own types (``response_model``) but rendered as dicts (response_object.py,
items.py) and not validated on the way out: the tests validate every kind with those types.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import JSONResponse, StreamingResponse
from openai.types.responses import InputTokenCountResponse
from openai.types.responses import Response as ResponseObject

from chat_gateway.deps import AnswersDep, CallerDep, ItemPageDep, ResponsePath
from chat_gateway.openai_api.chat_completions.protocol import ERROR_RESPONSES, PREFIX
from chat_gateway.openai_api.responses import serving as responses
from chat_gateway.openai_api.responses.items import ItemList
from chat_gateway.openai_api.responses.protocol import InputTokensCount, ResponseCreate
from chat_gateway.openai_api.responses.response_object import response_object
from shared import BadRequest, ErrorCode

router = APIRouter(prefix=PREFIX, tags=["OpenAI-compatible"], responses=ERROR_RESPONSES)
STREAMED: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
        "description": "The response, or its events.",
    }
}


def _stream(events: Any) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream")


@router.post("/responses", response_model=ResponseObject, responses=STREAMED)
async def create_response(
    body: ResponseCreate,
    caller: CallerDep,
    answers: AnswersDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Response:
    """Create a response: whole, streamed, or in the background (then poll it, or stream it from any event)."""
    answer, model = await responses.create(answers, caller, body, idempotency_key)
    if body.stream:
        return _stream(responses.events(answers, answer, model))
    if body.background:
        return JSONResponse(response_object(answer, model))
    final = await responses.wait(answers, answer)
    if not body.store:
        await responses.forget(answers, answer)
    return JSONResponse(response_object(final, final.model or model))


@router.post("/responses/input_tokens", response_model=InputTokenCountResponse)
async def count_input_tokens(body: InputTokensCount, caller: CallerDep, answers: AnswersDep) -> Response:
    """An estimate of a response's input tokens (its prompt's length over four), as its budget counts them."""
    return JSONResponse(await responses.count_input_tokens(answers, caller, body))


@router.post("/responses/compact", response_model=None, responses={400: {"description": "Not served here."}})
async def compact_response() -> Response:
    """Not served: a compacted conversation is an upstream model's own encrypted summary (400 unsupported)."""
    raise BadRequest(
        "responses.compact is not served by this gateway: its conversations are stored whole; keep the items, or "
        "start a new conversation from a summary of your own",
        code=ErrorCode.UNSUPPORTED,
    )


@router.get("/responses/{response_id}", response_model=ResponseObject, responses=STREAMED)
async def get_response(
    response: ResponsePath,
    caller: CallerDep,
    answers: AnswersDep,
    stream: bool = False,
    starting_after: Annotated[int, Query(ge=-1)] = -1,
) -> Response:
    """A response as it stands; with stream=true, its events after starting_after, then live until it ends."""
    answer = await answers.persistence.messages.get(response.id, caller.scope())
    model = answer.model or answers.settings.openai_model
    if stream:
        return _stream(responses.events(answers, answer, model, starting_after))
    return JSONResponse(response_object(answer, model))


@router.get("/responses/{response_id}/input_items", response_model=ItemList)
async def list_input_items(
    response: ResponsePath, caller: CallerDep, answers: AnswersDep, page: ItemPageDep
) -> Response:
    """The response's own input items, a page at a time."""
    return JSONResponse(await responses.list_input_items(answers, response.id, caller.scope(), page))


@router.post("/responses/{response_id}/cancel", response_model=ResponseObject)
async def cancel_response(response: ResponsePath, caller: CallerDep, answers: AnswersDep) -> Response:
    """Stop a background response (its text so far kept); one that has ended is returned as it ended."""
    answer = await responses.cancel(answers, response.id, caller.scope())
    return JSONResponse(response_object(answer, answer.model or answers.settings.openai_model))


@router.delete("/responses/{response_id}")
async def delete_response(response: ResponsePath, caller: CallerDep, answers: AnswersDep) -> dict[str, Any]:
    """Delete a response; one being generated stops."""
    await responses.delete(answers, response.id, caller.scope())
    return {"id": response.text, "object": "response", "deleted": True}
