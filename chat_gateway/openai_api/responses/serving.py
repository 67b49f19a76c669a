"""The Responses API over durable answers: creating a response, following it, cancelling and deleting it.

The request is read by protocol.py, the answer rendered by response_object.py and events.py (the events'
sequence numbers); the routes are in routes.py. A response is generated like any chat answer: it survives its
client, upstream drops and its gateway's death, and any gateway renders it and its events the same way, for as
long as it is stored.
"""

import contextlib
import json
import math
import uuid
from collections.abc import AsyncIterator
from typing import Any

from chat_gateway.answers.events import StreamEvent
from chat_gateway.answers.prompt import build_messages, load_history
from chat_gateway.answers.service import Answers
from chat_gateway.auth.identity import Caller
from chat_gateway.openai_api.chat_completions.protocol import OpenAIMessage
from chat_gateway.openai_api.chat_start import ChatStart, start
from chat_gateway.openai_api.conversations.serving import resolve_references, session_messages
from chat_gateway.openai_api.ids import message_id_of, session_of
from chat_gateway.openai_api.responses.events import ResponseEvents, sse
from chat_gateway.openai_api.responses.items import ItemPage, input_items, list_page
from chat_gateway.openai_api.responses.protocol import ResponseCreate, completion_request, input_messages
from shared import BadRequest, Conflict, DomainError, ErrorCode, JSONObject, MessageStatus
from shared.contract import MessageDetail
from shared.identity import CHARS_PER_TOKEN


async def _conversation_so_far(answers: Answers, previous: MessageDetail) -> list[OpenAIMessage]:
    """What ``previous`` answered and how, as chat messages: the response a ``previous_response_id`` goes on
    from. Its own instructions stay behind, as OpenAI's do."""
    if previous.prompt is not None:
        prompt = previous.prompt
        if (previous.response or {}).get("instructions") and prompt and prompt[0].get("role") == "system":
            prompt = prompt[1:]
    else:
        history = await load_history(answers.persistence.messages, previous.session_id, previous, 2**30)
        prompt = [dict(message) for message in build_messages(history)]
    answered: JSONObject = {"role": "assistant", "content": previous.content or None}
    if previous.tool_calls:
        answered["tool_calls"] = [call.model_dump() for call in previous.tool_calls]
    return [OpenAIMessage.model_validate(message) for message in [*prompt, answered]]


async def _conversation(
    answers: Answers, caller: Caller, body: ResponseCreate
) -> tuple[list[OpenAIMessage], list[OpenAIMessage], uuid.UUID | None]:
    """What the response goes on from (its previous response's or its conversation's messages), its own input as
    chat messages, and the session it is stored in (None: found or made by ``create``)."""
    if body.previous_response_id and body.conversation_id():
        raise BadRequest("give previous_response_id or conversation, not both", code=ErrorCode.INVALID_VALUE)
    scope = caller.scope(None if caller.is_user else body.user)
    new = input_messages(await resolve_references(answers, body, scope))
    if body.previous_response_id:
        previous = await answers.persistence.messages.get(message_id_of(body.previous_response_id), scope)
        if previous.status in (MessageStatus.PENDING, MessageStatus.IN_PROGRESS):
            # Its text so far is not what the conversation will hold: the model would be shown a partial answer.
            raise Conflict(
                f"the previous response {body.previous_response_id} is still in progress: wait for it to end",
                code=ErrorCode.IN_PROGRESS,
            )
        before = await _conversation_so_far(answers, previous)
        last = await answers.persistence.messages.last(previous.session_id, None, scope)
        # Its session goes on if the previous response is still its end; else this is a branch: a session of its
        # own, its prompt (kept with the answer) holding the conversation so far.
        return before, new, previous.session_id if last.id == previous.id else None
    if conversation := body.conversation_id():
        session_id = session_of(conversation)
        return await session_messages(answers, session_id, scope), new, session_id
    return [], new, None


async def create(
    answers: Answers, caller: Caller, body: ResponseCreate, idempotency_key: str | None
) -> tuple[MessageDetail, str]:
    """Store the response's input and its answer, and start generating it; returns the answer and its model."""
    if body.background and not body.store:
        raise BadRequest("background responses must be stored: store cannot be false", code=ErrorCode.INVALID_VALUE)
    model = body.model or answers.settings.openai_model
    before, new, session_id = await _conversation(answers, caller, body)
    named = session_id if body.conversation_id() else None  # the conversation it names
    if not body.store:  # answered in a session of its own, deleted with it once it ends (forget)
        session_id = None
    instructions = [OpenAIMessage(role="system", content=body.instructions)] if body.instructions else []
    completion = completion_request(body, [*instructions, *before, *new], model)
    response = body.response(len(new))
    key_prompt = None
    if named is not None:  # its retry finds the first one's turn in the conversation already: keyed without it
        key_prompt = [message.upstream() for message in [*instructions, *_before_its_turn(before, new), *new]]
    how = ChatStart(
        None if caller.is_user else body.user,
        session_id=session_id,
        # A client that resends its whole conversation (the Agents SDK does) goes on in the session that holds it.
        find_session=body.store and not body.previous_response_id,
        named=named,
        keyed=body.store,
        retried=body.store,  # a response not stored is deleted once it ends: no retry
        key_prompt=key_prompt,
        # In a conversation, the same input again once its answer is complete is the conversation going on ("yes",
        # "continue"): only a request whose answer is still generated, or failed, is taken for its retry.
        retry_window=0 if named is not None else None,
        follows_added=not body.previous_response_id and named is None,
        response=response,
    )
    answer = await start(answers, caller, completion, new, how, idempotency_key)
    # Named as the answer is stored: the model asked for, an alias resolved (chat_gateway/answers/parts.py).
    return answer.model_copy(update={"response": response}), answer.model or model  # a turn's answer: without it


def _before_its_turn(history: list[OpenAIMessage], new: list[OpenAIMessage]) -> list[OpenAIMessage]:
    """A conversation's history without a last turn that is ``new`` (and its answer, once complete): what the
    request that stored that turn was sent with, when this one is it again."""
    end = len(history) - (bool(history) and history[-1].role == "assistant")
    start = end - len(new)
    shown = [(m.role, m.text(), m.tool_call_id) for m in history[max(start, 0) : end]]
    if new and start >= 0 and shown == [(m.role, m.text(), m.tool_call_id) for m in new]:
        return history[:start]
    return history


async def count_input_tokens(answers: Answers, caller: Caller, body: ResponseCreate) -> JSONObject:
    """An estimate of the tokens the response's input would be (the prompt's length: ``CHARS_PER_TOKEN``
    characters a token, as budgets count it): the upstream's own tokenizer is not known here."""
    before, new, _ = await _conversation(answers, caller, body)
    instructions = [OpenAIMessage(role="system", content=body.instructions)] if body.instructions else []
    shown = [message.upstream() for message in [*instructions, *before, *new]]
    tools = body.chat_options().get("tools") or []
    characters = len(json.dumps([shown, tools], ensure_ascii=False))
    return {"object": "response.input_tokens", "input_tokens": math.ceil(characters / CHARS_PER_TOKEN)}


async def events(answers: Answers, answer: MessageDetail, model: str, starting_after: int = -1) -> AsyncIterator[str]:
    """The response's events after ``starting_after``, live until it ends, as Server-Sent Events; a response
    not to be stored is deleted once its client has them (or has gone)."""
    try:
        async for event in _events(answers, answer, model, starting_after):
            yield event
    finally:
        if (answer.response or {}).get("store") is False:
            await forget(answers, answer)


async def forget(answers: Answers, answer: MessageDetail) -> None:
    """Delete a response its client asked not to store (with the session it was answered in, its own)."""
    with contextlib.suppress(DomainError):  # gone already, or persistence down: nothing more to do here
        await answers.persistence.sessions.delete(answer.session_id)


async def _events(answers: Answers, answer: MessageDetail, model: str, starting_after: int) -> AsyncIterator[str]:
    render = ResponseEvents(answer, model, starting_after)
    if started := "".join(render.start()):
        yield started
    offset = render.text_offset()
    if answer.status in (MessageStatus.COMPLETE, MessageStatus.FAILED):
        offset = min(offset, len(answer.content))
    text: list[str] | None = [] if offset == 0 else None  # the whole text, when this stream has it all
    async for event in answers.follow(answer.id, offset):
        if event.kind == "delta":
            if event.model is not None:  # several models wrote it: its end is read as stored, with its parts
                text = None
            if text is not None:
                text.append(event.text)
            # A delta's events in one write: sent one by one, each went down the middleware and into the socket
            # on its own, and cost a Responses stream half as much CPU again per chunk as a Chat Completions one.
            if rendered := "".join(render.text(event.text, event.offset, event.logprobs, event.model)):
                yield rendered
        elif event.kind == "done" or event.status is not None:
            yield "".join(render.end(await _as_ended(answers, answer, event, text)))
        else:  # lost track of it (persistence unreachable): it may go on; resuming from here follows it again
            lost = {"code": "unavailable", "message": event.error, "param": None}  # the SDK's ResponseErrorEvent
            yield sse({"type": "error", "sequence_number": render.last, **lost})


async def _as_ended(
    answers: Answers, answer: MessageDetail, event: StreamEvent, text: list[str] | None
) -> MessageDetail:
    """The answer as it was stored when it ended: from its end event when this stream had all of its text (an
    end is only given once stored), else read again."""
    if text is None:
        return await answers.persistence.messages.get(answer.id)
    ended: dict[str, Any] = {"content": "".join(text), "status": event.status, "error": event.error}
    ended |= {"finish_reason": event.finish_reason, "usage": event.usage or None}
    return answer.model_copy(update=ended | {"tool_calls": list(event.tool_calls) or None})


async def cancel(answers: Answers, message_id: uuid.UUID, scope: str | None) -> MessageDetail:
    """Stop a background response; cancelling one that has ended returns it as it ended."""
    answer = await answers.persistence.messages.get(message_id, scope)
    if not (answer.response or {}).get("background"):
        raise BadRequest("only background responses can be cancelled", code=ErrorCode.INVALID_VALUE)
    if answer.status in (MessageStatus.COMPLETE, MessageStatus.FAILED):
        return answer
    try:
        return await answers.cancel(answer.id, scope)
    except Conflict:  # it completed since it was read, here or on the gateway generating it: as it ended
        ended = await answers.persistence.messages.get(answer.id)
        if ended.status != MessageStatus.COMPLETE:
            raise
        return ended


async def delete(answers: Answers, message_id: uuid.UUID, scope: str | None) -> None:
    """Delete a response (its answer); one being generated stops at its next write."""
    await answers.persistence.messages.delete(message_id, scope)


async def list_input_items(answers: Answers, message_id: uuid.UUID, scope: str | None, page: ItemPage) -> JSONObject:
    """A page of the response's own input items, in OpenAI's list shape."""
    answer = await answers.persistence.messages.get(message_id, scope)
    return list_page(input_items(answer), page)


async def wait(answers: Answers, answer: MessageDetail) -> MessageDetail:
    """The response once it has ended, as stored."""
    return await answers.outcome(answer.id)
