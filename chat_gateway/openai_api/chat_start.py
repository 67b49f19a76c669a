"""The one path from a request of either OpenAI API (Chat Completions, Responses) to its chat: what the request
adds, the session it goes on in, its keys, its prompt, and ``Answers.start_chat``.

Both APIs send the whole conversation as chat messages (a Responses request is translated to them first); what
differs between them is said in ``ChatStart``.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from chat_gateway.answers.plan import ChatPlan
from chat_gateway.answers.service import Answers
from chat_gateway.auth.identity import Caller
from chat_gateway.openai_api.chat_completions.protocol import CompletionRequest, OpenAIMessage, chat_request, new_inputs
from chat_gateway.openai_api.session_matching import conversation_key, find_session, request_key
from shared import JSONObject
from shared.contract import MessageDetail


@dataclass(frozen=True)
class ChatStart:
    """Where a request goes on and how its answer is found again: what its API says of it."""

    acting_for: str | None  # the end user an admin's key acts for (OpenAI's ``user``)
    session_id: uuid.UUID | None = None  # the session it goes on in, when the request says which
    must_exist: bool = False  # ``session_id`` is one the client named: it exists and is the caller's to write into
    find_session: bool = True  # without ``session_id``: it goes on in the session holding its conversation, if any
    named: uuid.UUID | None = None  # the session the client named, part of its request key
    keyed: bool = True  # its answer keeps its conversation's key (session_matching.py)
    retried: bool = True  # without an Idempotency-Key, the same request again finds its answer
    key_prompt: Sequence[object] | None = None  # what its request key holds of the prompt, if not the prompt
    retry_window: float | None = None
    follows_added: bool = False
    response: JSONObject | None = None  # what a Responses client asked for, kept with the answer


async def start(
    answers: Answers,
    caller: Caller,
    completion: CompletionRequest,
    new: list[OpenAIMessage],
    chat: ChatStart,
    idempotency_key: str | None,
) -> MessageDetail:
    """Store the request's new messages (the last of ``completion``'s, within ``new``) and its answer, and start
    generating it; the answer as ``Answers.start_chat`` returns it."""
    question, results = new_inputs(new)
    model = completion.model or answers.settings.openai_model
    owner = caller.owner(chat.acting_for)
    session_id = chat.session_id
    if session_id is not None and chat.must_exist:  # else a 404
        await answers.persistence.sessions.get(session_id, caller.writes_into(chat.acting_for))
    if session_id is None and chat.find_session:  # the session that holds the conversation so far, if one does
        earlier = completion.messages[: len(completion.messages) - len(results) - (question is not None)]
        session_id = await find_session(answers.persistence, owner, caller.scope(), earlier, results)
    request = chat_request(completion, question, results, session_id, chat.acting_for, model)
    prompt = completion.prompt()
    options = request.options.given() if request.options is not None else {}
    key_prompt = prompt if chat.key_prompt is None else chat.key_prompt
    retried = chat.retried and idempotency_key is None
    plan = ChatPlan(
        request,
        caller,
        prompt=prompt,
        create_session=True,
        conversation_key=conversation_key(owner, completion.messages) if chat.keyed else None,
        request_key=request_key(owner, chat.named, key_prompt, model, options, chat.response) if retried else None,
        retry_window=chat.retry_window,
        follows_added=chat.follows_added,
        response=chat.response,
    )
    return await answers.start_chat(plan, idempotency_key)
