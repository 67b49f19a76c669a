"""One conversation, one session, without a header: an OpenAI client that names no session resends its whole
conversation with each message, and it goes on in the session that holds it.

Each answer to such a client keeps a key of the conversation it answered (a hash of what the model was shown,
scoped to its owner). A request whose conversation, up to its last assistant message, is one such answer's
conversation followed by that answer as stored, goes on in that answer's session, provided the answer is
still the session's last message. What the key leaves out is what frameworks change between the requests of
one conversation without changing the conversation:

- system and developer messages: an agent's instructions that change per round (a handoff, instructions made
  per run) are what the model was shown, and each answer keeps its whole prompt; they are no reason to branch;
- how a call's arguments are written: the key and persistence compare them as JSON values (``ToolCall.as_resent``),
  since clients send back the model's ``{"city": "Lyon"}`` compact, escaped or reordered;
- a tool message's ``name``, which some clients add and others drop.

Anything else starts a session of its own:

- an edited history (a message changed, removed or added before the last answer) matches no key;
- a branch (a client that goes back to an earlier answer and asks something else) finds an answer that is no
  longer its session's last: the branch gets its own session, and the first conversation stays as it was;
- the same conversation asked twice, in two sessions, goes on in the newer one.

The same request sent again (``request_key``) is not a new turn at all: it attaches to the first one's answer.
"""

import hashlib
import json
import uuid
from collections.abc import Sequence

from pydantic import ValidationError

from chat_gateway.clients.persistence import PersistenceClient
from chat_gateway.openai_api.chat_completions.protocol import OpenAIMessage
from shared import JSONObject
from shared.contract import ConversationFind


def conversation_key(owner: str, messages: list[OpenAIMessage]) -> str:
    """A key of a conversation as its client sends it, for its owner: what a client that names no session finds
    its session by when it resends the conversation (and the answer) with its next message.

    Only what makes the conversation counts (the module's docstring): a client echoing an answer back with
    ``refusal: null`` or an empty text as ``null``, another system prompt, or its calls' arguments re-serialized,
    sends the same conversation.
    """
    shown = []
    for message in messages:
        if message.role in ("system", "developer"):
            continue
        calls = [call.as_resent() for call in message.calls()]
        content = message.parts() or message.text()
        shown.append([message.role, content, calls, message.tool_call_id])
    encoded = json.dumps([owner, shown], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()


def request_key(
    owner: str,
    named_session: uuid.UUID | None,
    prompt: Sequence[object],
    model: str,
    options: JSONObject,
    response: JSONObject | None = None,
) -> str:
    """A key of one request as its client sends it, and sends it again when it retries it (the SDKs do, on a
    timeout or a 5xx, with no Idempotency-Key): its owner, the session it names (if it names one), everything
    the model is shown, and how (model, options, ``response``: what a Responses client asked for). Persistence
    keeps it unique among answers: the same request again finds the first one's answer (migration 0011)."""
    request = [owner, str(named_session) if named_session else None, model, options, response, prompt]
    encoded = json.dumps(request, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


async def find_session(
    persistence: PersistenceClient,
    owner: str,
    scope: str | None,
    conversation: list[OpenAIMessage],
    results: list[OpenAIMessage],
) -> uuid.UUID | None:
    """The session ``conversation`` (everything before the new messages, ``results`` among them) goes on in."""
    if not conversation or conversation[-1].role != "assistant":
        return None
    answer = conversation[-1]
    try:
        find = ConversationFind(
            conversation_key=conversation_key(owner, conversation[:-1]),
            user_id=owner,
            content=answer.text(),
            tool_calls=answer.calls() or None,
            results_of=[result.tool_call_id or "" for result in results],
        )
    except ValidationError:  # text no answer stored here could hold (a NUL...): not a conversation of ours
        return None
    found = await persistence.sessions.find(find, scope)
    return found.session_id if found is not None else None
