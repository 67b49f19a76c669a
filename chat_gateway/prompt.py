"""What the model is shown: the session's history within a budget, the RAG context, a partial answer."""

import json
import uuid
from typing import Any, cast

from openai.types.chat import ChatCompletionMessageParam

from chat_gateway.persistence_client import AnswerStore
from shared import JSONObject, MessageRole
from shared.contract import MessageDetail

CONTINUE_INSTRUCTION = (
    "The assistant's last message was interrupted. Continue it exactly where it stopped, "
    "without repeating any of it and without any preamble."
)
# For an upstream that answers with a new message: the one repeat it is asked for is the one that is cut.
RESTART_INSTRUCTION = (
    "The assistant's last message was interrupted. Continue it: begin your reply with its last words, "
    "repeated exactly as they are between the brackets [[{anchor}]], then go on from where it stopped, "
    "without any other repetition or preamble."
)
ANCHOR_CHARS = 40


def render_context(context: Any) -> str:
    if isinstance(context, str):
        return context
    return json.dumps(context, ensure_ascii=False)


async def load_history(
    persistence: AnswerStore, session_id: uuid.UUID, answer: MessageDetail, budget_chars: int
) -> list[MessageDetail]:
    """The newest complete messages written before ``answer`` whose text fits the budget, oldest first.

    The newest message always goes in, even over budget: without it there is nothing to answer. So does the
    call a tool's result answers (and every message between them): a model's API refuses a result without
    its call, and the budget never cuts a round of tool calls in two.
    """
    chosen: list[MessageDetail] = []
    used = 0
    cursor: str | None = None
    while True:
        page, cursor = await persistence.history_page(session_id, cursor)
        for message in page:
            if message.created_at > answer.created_at or message.id == answer.id:
                continue
            # Everything of it the prompt carries, as budgets count it (usage.with_history): calls and parts too.
            size = len(message.content) + len(render_context(message.context) if message.context else "")
            size += len(json.dumps([call.model_dump() for call in message.tool_calls])) if message.tool_calls else 0
            size += len(json.dumps(message.parts)) if message.parts else 0
            if chosen and used + size > budget_chars and chosen[-1].role != MessageRole.TOOL:
                return chosen[::-1]
            chosen.append(message)
            used += size
        if cursor is None:
            return chosen[::-1]


def _chat_message(message: MessageDetail, answered: set[str]) -> ChatCompletionMessageParam:
    """A stored message as the model is shown it: with its calls (those ``answered``), as the result of one,
    or as its parts."""
    if message.role == MessageRole.ASSISTANT:
        if calls := [call.model_dump() for call in message.tool_calls or [] if call.id in answered]:
            return cast(
                ChatCompletionMessageParam,
                {"role": "assistant", "content": message.content, "tool_calls": calls},
            )
        return {"role": "assistant", "content": message.content}
    if message.role == MessageRole.TOOL:
        return {"role": "tool", "content": message.content, "tool_call_id": message.tool_call_id or ""}
    if message.role == MessageRole.SYSTEM:
        return {"role": "system", "content": message.content}
    return _user_message(message.content, message.parts)


def _user_message(content: str, parts: list[JSONObject] | None) -> ChatCompletionMessageParam:
    return cast(ChatCompletionMessageParam, {"role": "user", "content": parts if parts else content})


def question_messages(
    content: str, context: Any, parts: list[JSONObject] | None = None
) -> list[ChatCompletionMessageParam]:
    """The newest user message, its context (if any) in a system message just before it."""
    question = _user_message(content, parts)
    if not context:
        return [question]
    return [{"role": "system", "content": "Context:\n" + render_context(context)}, question]


def build_messages(history: list[MessageDetail]) -> list[ChatCompletionMessageParam]:
    """History as chat messages, the newest user message as ``question_messages`` puts it.

    Calls and results go in pairs: a call nobody answered (the chat went on with a question) and a result of
    no call shown are left out, since a model's API refuses either, and every later turn would fail.
    """
    results = {m.tool_call_id for m in history if m.role == MessageRole.TOOL and m.tool_call_id}
    calls = {call.id for m in history for call in m.tool_calls or [] if call.id in results}
    last_user = max((i for i, m in enumerate(history) if m.role == MessageRole.USER), default=None)
    messages: list[ChatCompletionMessageParam] = []
    for index, message in enumerate(history):
        if index == last_user:
            messages.extend(question_messages(message.content, message.context, message.parts))
        elif message.role != MessageRole.TOOL or message.tool_call_id in calls:
            messages.append(_chat_message(message, calls))
    return messages


def continuation_anchor(partial: str, size: int = ANCHOR_CHARS) -> str:
    """The last words of ``partial`` (about ``size`` characters, from the start of a word where there is one):
    what an upstream that starts a new message is asked to repeat before it goes on."""
    if len(partial) <= size:
        return partial
    tail = partial[-size:]
    word = next((i + 1 for i, c in enumerate(tail) if c.isspace()), 0)
    return tail[word:] or tail


class Continuation:
    """How an interrupted answer is continued, and how what the upstream sends next joins its text.

    ============  ==========================================  =============================================
    upstream      what it is sent                             what is cut from what it sends
    ============  ==========================================  =============================================
    ``exact``     the partial answer as the last, assistant,  nothing: it continues the text itself
                  message (llama.cpp, Ollama, our fake)       (assistant prefill), so a repeat is the
                                                              answer's own (a table's rows, "ha ha ha")
    ``restart``   the same, and an instruction to begin by    that anchor, once, if the reply begins with
                  repeating its last words, the *anchor*      it; else nothing
                  (OpenAI, which starts a new message)
    ============  ==========================================  =============================================

    Text is never cut because it *looks* repeated. The residual risk, ``restart`` only: a model that ignores
    the instruction and whose true continuation begins with exactly the anchor (the same words again), or
    ends within the anchor's first words, loses that one repeat; one that repeats more than the anchor keeps
    the surplus twice.
    """

    def __init__(self, partial: str, *, exact: bool) -> None:
        self.partial = partial
        self.anchor = "" if exact or not partial else continuation_anchor(partial)
        self._held = ""
        self._released = not self.anchor

    def messages(self, prompt: list[ChatCompletionMessageParam]) -> list[ChatCompletionMessageParam]:
        """The prompt to continue the partial answer from: it goes last, as an assistant message (the form
        OpenAI-compatible servers continue from); the instruction comes before it, never after."""
        if not self.partial:
            return prompt
        instruction = RESTART_INSTRUCTION.format(anchor=self.anchor) if self.anchor else CONTINUE_INSTRUCTION
        return [
            *prompt,
            {"role": "system", "content": instruction},
            {"role": "assistant", "content": self.partial},
        ]

    def feed(self, text: str) -> str:
        """What of ``text`` goes after the answer so far (the start is held while it may be the anchor)."""
        if self._released:
            return text
        self._held += text
        if self._held.startswith(self.anchor):
            return self._release(self._held[len(self.anchor) :])
        if self.anchor.startswith(self._held):
            return ""  # may still become the anchor
        return self._release(self._held)

    def flush(self) -> str:
        """At the end of the stream: what is still held (a reply that stopped inside the anchor repeated it)."""
        if self._released:
            return ""
        return self._release("" if self.anchor.startswith(self._held) else self._held)

    def _release(self, text: str) -> str:
        self._released, self._held = True, ""
        return text
