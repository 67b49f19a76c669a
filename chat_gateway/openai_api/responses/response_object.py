"""A response's object (``response``), rendered from its answer as stored: what any gateway returns for it, and
what its stream's first and last events hold."""

import json
import time

from chat_gateway.openai_api.ids import conversation_id, response_id
from chat_gateway.openai_api.responses.items import output_items
from shared import CANCELLED, JSONObject, MessageStatus
from shared.contract import MessageDetail


def _status(answer: MessageDetail) -> str:
    """A response's status from its answer's: how it ended, when it has."""
    if answer.status == MessageStatus.PENDING:
        return "queued"
    if answer.status == MessageStatus.IN_PROGRESS:
        return "in_progress"
    if answer.status == MessageStatus.FAILED:
        return "cancelled" if answer.error == CANCELLED else "failed"
    return "incomplete" if answer.finish_reason in ("length", "content_filter") else "completed"


# OpenAI's limits on a response's metadata, which its clients may check: 16 keys, values of 512 characters.
METADATA_KEYS = 16
METADATA_VALUE_LENGTH = 512
PARTS_KEY = "answer_parts"


def metadata(answer: MessageDetail) -> JSONObject:
    """The client's metadata, and, when several models wrote the answer (one failed mid-answer), which wrote which
    part under ``answer_parts``: ``[[model, offset], ...]`` as JSON, as many parts as 512 characters hold (all of
    them: GET /chat/messages/{id}). Left out when the client's metadata has that key, or no room for another."""
    own: JSONObject = (answer.response or {}).get("metadata") or {}
    if not answer.answer_parts or PARTS_KEY in own or len(own) >= METADATA_KEYS:
        return own
    parts = [[part.model, part.offset] for part in answer.answer_parts]
    value = json.dumps(parts, separators=(",", ":"))
    while len(value) > METADATA_VALUE_LENGTH:
        parts.pop()
        value = json.dumps(parts, separators=(",", ":"))
    return own | {PARTS_KEY: value}


def _usage(usage: JSONObject | None) -> JSONObject | None:
    if not usage:
        return None
    prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": int(usage.get("total_tokens", prompt + completion)),
    }


def response_object(answer: MessageDetail, model: str, *, snapshot: bool = False) -> JSONObject:
    """The response as stored (``snapshot``: as it began, for ``response.created``)."""
    response = answer.response or {}
    status = "queued" if snapshot and answer.status == MessageStatus.PENDING else _status(answer)
    if snapshot and status not in ("queued",):
        status = "in_progress"
    error = None
    if status == "failed":
        error = {"code": "server_error", "message": answer.error or "the answer failed"}
    incomplete = None
    if status == "incomplete":
        reason = "max_output_tokens" if answer.finish_reason == "length" else "content_filter"
        incomplete = {"reason": reason}
    return {
        "id": response_id(answer.id),
        "object": "response",
        "created_at": int(answer.created_at.timestamp()),
        "status": status,
        "background": bool(response.get("background")),
        "model": model,
        "output": [] if snapshot else output_items(answer),
        "error": error,
        "incomplete_details": incomplete,
        "instructions": response.get("instructions"),
        "metadata": metadata(answer),
        "previous_response_id": response.get("previous_response_id"),
        "conversation": {"id": conversation_id(answer.session_id)},
        "parallel_tool_calls": response.get("parallel_tool_calls")
        if response.get("parallel_tool_calls") is not None
        else True,
        "tool_choice": response.get("tool_choice") or "auto",
        "tools": response.get("tools") or [],
        "temperature": response.get("temperature"),
        "top_p": response.get("top_p"),
        "top_logprobs": response.get("top_logprobs"),
        "reasoning": response.get("reasoning") or {"effort": None, "summary": None},
        "user": response.get("user"),
        "max_output_tokens": response.get("max_output_tokens"),
        "text": response.get("text") or {"format": {"type": "text"}},
        "store": response.get("store", True),
        "usage": None if snapshot else _usage(answer.usage),
        "completed_at": int(time.time()) if not snapshot and status == "completed" else None,
    }
