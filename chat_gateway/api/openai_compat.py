"""OpenAI's Chat Completions wire format, so OpenAI clients work by changing only their base_url.

Every call is stored like /chat: only the new turn (the last, user, message) is stored, since OpenAI
clients send the whole history each time; the answer is durable the same way.
"""

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException
from starlette.types import Scope

from chat_gateway.deps import AnswersDep, CallerDep, SettingsDep
from chat_gateway.generation import StreamEvent
from chat_gateway.schemas import ChatRequest, GenerationOptions
from chat_gateway.service import Answers
from shared import BadRequest, DomainError, ErrorCode, MessageStatus


class OpenAIError(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, authentication_error, rate_limit_error, api_error...")
    param: str | None = None
    code: str | None = Field(default=None, description="This gateway's code, as in its other routes' errors.")


class OpenAIErrorBody(BaseModel):
    """Errors under /v1, in OpenAI's shape, so OpenAI clients raise their usual exceptions."""

    error: OpenAIError


_OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": OpenAIErrorBody, "description": "Refused (a 422 is a 400 here, as in OpenAI's API)."},
    "5XX": {"model": OpenAIErrorBody, "description": "Unavailable (503: retry) or the answer failed (502)."},
}
router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"], responses=_OPENAI_ERRORS)

SESSION_HEADER = "X-Session-Id"
_SESSION_KEYS = uuid.UUID("0b9e4f3a-55c1-4c52-9a57-b1a1f1d6c0de")
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


# Parameters that would change what an answer is (tool calls, several choices, audio...): the gateway stores
# and relays one text answer, so it refuses them rather than answer something else than asked.
_UNSUPPORTED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "n": (lambda n: n != 1, "one choice per request is supported: n must be 1"),
    "tools": (bool, "tool calling is not supported: this gateway stores and relays text answers"),
    "functions": (bool, "function calling is not supported: this gateway stores and relays text answers"),
    "logprobs": (bool, "logprobs are not supported"),
    "modalities": (lambda kinds: any(kind != "text" for kind in kinds), "only text output is supported"),
    "audio": (lambda _: True, "only text output is supported"),
}


class CompletionRequest(GenerationOptions):
    """A Chat Completions request: its generation options are passed on; other parameters are ignored
    (``store``, ``parallel_tool_calls``...) or refused when they ask for more than one text answer."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(default=None, max_length=200)
    messages: list[OpenAIMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=255)
    metadata: dict[str, str] | None = None
    n: int | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    logprobs: bool | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None

    @field_validator(*_UNSUPPORTED)
    @classmethod
    def _supported(cls, value: Any, info: ValidationInfo) -> Any:
        is_unsupported, reason = _UNSUPPORTED[str(info.field_name)]
        if value is not None and is_unsupported(value):
            raise PydanticCustomError("unsupported_parameter", reason)
        return value

    def options(self) -> GenerationOptions | None:
        given = self.model_dump(include=set(GenerationOptions.model_fields), exclude_none=True)
        return GenerationOptions.model_validate(given) if given else None


def _session_id(header: str | None, body: CompletionRequest, user_id: str | None) -> uuid.UUID | None:
    """X-Session-Id, else metadata.session_id, else user: a UUID as given, any other key mapped to one (for a
    user's credential, one of their own: two users naming their chats alike never share one)."""
    key = header or (body.metadata or {}).get("session_id") or body.user
    if not key:
        return None
    try:
        return uuid.UUID(key)
    except ValueError:
        return uuid.uuid5(_SESSION_KEYS, key if user_id is None else f"{user_id}\x00{key}")


def _completion_id(message_id: uuid.UUID) -> str:
    return f"chatcmpl-{message_id.hex}"


def _sse(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body)}\n\n"


class ChunkFormat:
    """The ``chat.completion.chunk`` events of one streamed answer."""

    def __init__(self, message_id: uuid.UUID, model: str, include_usage: bool) -> None:
        self.base = {"id": _completion_id(message_id), "object": "chat.completion.chunk", "created": int(time.time())}
        self.base["model"] = model
        self.include_usage = include_usage
        # A text chunk is an empty one rendered around its content: building and encoding the whole dict
        # for every chunk cost a tenth of the relay's CPU (docs/benchmarks.md).
        self._head, _, self._tail = self.chunk({"content": "\0"}).rpartition(json.dumps("\0"))

    def chunk(self, delta: dict[str, str], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _sse(self.base | {"choices": [choice]} | ({"usage": None} if self.include_usage else {}))

    def text(self, text: str) -> str:
        """``chunk({"content": text})``, rendered faster."""
        return self._head + json.dumps(text) + self._tail

    def usage(self, usage: dict[str, int]) -> str:
        return _sse(self.base | {"choices": [], "usage": usage or None})


async def _chunks(answers: Answers, message_id: uuid.UUID, model: str, include_usage: bool) -> AsyncIterator[str]:
    render = ChunkFormat(message_id, model, include_usage)
    yield render.chunk({"role": "assistant", "content": ""})
    event: StreamEvent
    async for event in answers.follow(message_id, 0):
        if event.kind == "delta":
            yield render.text(event.text)
        elif event.kind == "done":
            yield render.chunk({}, event.finish_reason or "stop")
            if include_usage:
                yield render.usage(event.usage)
            yield "data: [DONE]\n\n"
        else:
            failed = event.status == MessageStatus.FAILED
            message = f"the answer failed: {event.error}" if failed else str(event.error)
            yield _sse({"error": {"message": message, "type": "api_error"}})


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
    last = body.messages[-1]
    if last.role != "user" or not last.text():
        raise BadRequest("the last message must be a user message with text", code=ErrorCode.INVALID_VALUE)
    model = body.model or settings.openai_model
    prompt: list[ChatCompletionMessageParam] = [m.model_dump(exclude_none=True) for m in body.messages]  # type: ignore[misc]
    session_id = _session_id(x_session_id, body, caller.user_id)
    # OpenAI's `user` names an end user of the client's own: it says whose chat it is only for an admin's key.
    request = ChatRequest(
        message=last.text(),
        session_id=session_id,
        user_id=None if caller.is_user else body.user,
        model=model,
        options=body.options(),
    )
    answer = await answers.start_chat(request, idempotency_key, caller=caller, prompt=prompt, create_session=True)
    headers = {SESSION_HEADER: str(answer.session_id)}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        stream = _chunks(answers, answer.id, model, include_usage)
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
    final = await answers.outcome(answer.id)
    if final.status == MessageStatus.FAILED:
        error = {"message": f"the answer failed: {final.error}", "type": "api_error", "param": None, "code": None}
        return JSONResponse({"error": error}, status_code=502, headers=headers)
    completion = {
        "id": _completion_id(final.id),
        "object": "chat.completion",
        "created": int(final.created_at.timestamp()),
        "model": final.model or model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": final.content, "refusal": None},
                "logprobs": None,
                "finish_reason": final.finish_reason or "stop",
            }
        ],
        "usage": final.usage,
    }
    return JSONResponse(completion, headers=headers)


@router.get("/models")
async def list_models(settings: SettingsDep) -> dict[str, Any]:
    """The model this gateway answers with by default, in OpenAI's list format."""
    model = {"id": settings.openai_model, "object": "model", "created": 0, "owned_by": "durable-chat"}
    return {"object": "list", "data": [model]}


Handler = Callable[[Request, Exception], Awaitable[Response]]


def reshape_under_v1(scope: Scope, response: Response) -> Response:
    """An error in the one shape, in OpenAI's ({"error": {...}}) under /v1, so OpenAI clients understand it."""
    if not scope["path"].startswith("/v1/"):
        return response
    ours = json.loads(bytes(response.body))
    status = 400 if response.status_code == 422 else response.status_code
    error = {
        "message": ours["detail"],
        "type": _ERROR_TYPES.get(status, "api_error"),
        "param": None,
        "code": ours["code"],
    }
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def use_openai_errors_under_v1(app: FastAPI) -> None:
    """Under /v1, the exception handlers answer in OpenAI's shape (the limits' own answers: ``reshape_under_v1``)."""
    for exc_class in (DomainError, RequestValidationError, HTTPException):
        standard: Handler = app.exception_handlers[exc_class]  # type: ignore[assignment]

        async def handler(request: Request, exc: Exception, standard: Handler = standard) -> Response:
            return reshape_under_v1(request.scope, await standard(request, exc))

        app.add_exception_handler(exc_class, handler)
