"""What the model is shown: the session's history within a budget, the RAG context, a partial answer."""

import json
import uuid
from typing import Any

from openai.types.chat import ChatCompletionMessageParam

from chat_gateway.persistence import PersistenceClient
from chat_gateway.schemas import StoredMessage
from shared import MessageRole

CONTINUE_INSTRUCTION = (
    "The assistant's last message was interrupted. Continue it exactly where it stopped, "
    "without repeating any of it and without any preamble."
)


def render_context(context: Any) -> str:
    if isinstance(context, str):
        return context
    return json.dumps(context, ensure_ascii=False)


async def load_history(
    persistence: PersistenceClient, session_id: uuid.UUID, answer: StoredMessage, budget_chars: int
) -> list[StoredMessage]:
    """The newest complete messages written before ``answer`` whose text fits the budget, oldest first.

    The newest user message always goes in, even over budget: without it there is nothing to answer.
    """
    chosen: list[StoredMessage] = []
    used = 0
    cursor: str | None = None
    while True:
        page, cursor = await persistence.history_page(session_id, cursor)
        for message in page:
            if message.created_at > answer.created_at or message.id == answer.id:
                continue
            size = len(message.content) + len(render_context(message.context) if message.context else "")
            if chosen and used + size > budget_chars:
                return chosen[::-1]
            chosen.append(message)
            used += size
        if cursor is None:
            return chosen[::-1]


def _chat_message(role: MessageRole, content: str) -> ChatCompletionMessageParam:
    if role == MessageRole.ASSISTANT:
        return {"role": "assistant", "content": content}
    if role == MessageRole.SYSTEM:
        return {"role": "system", "content": content}
    return {"role": "user", "content": content}


def question_messages(content: str, context: Any) -> list[ChatCompletionMessageParam]:
    """The newest user message, its context (if any) in a system message just before it."""
    if not context:
        return [{"role": "user", "content": content}]
    return [{"role": "system", "content": "Context:\n" + render_context(context)}, {"role": "user", "content": content}]


def build_messages(history: list[StoredMessage]) -> list[ChatCompletionMessageParam]:
    """History as chat messages, the newest user message as ``question_messages`` puts it."""
    last_user = max((i for i, m in enumerate(history) if m.role == MessageRole.USER), default=None)
    messages: list[ChatCompletionMessageParam] = []
    for index, message in enumerate(history):
        if index == last_user:
            messages.extend(question_messages(message.content, message.context))
        else:
            messages.append(_chat_message(message.role, message.content))
    return messages


def with_partial(messages: list[ChatCompletionMessageParam], partial: str) -> list[ChatCompletionMessageParam]:
    """The prompt to continue a partial answer from.

    The partial answer goes last, as an assistant message: the form OpenAI-compatible servers
    (llama.cpp, vLLM, DeepSeek) continue from; the instruction to continue comes before it, never after.
    """
    if not partial:
        return messages
    return [
        *messages,
        {"role": "system", "content": CONTINUE_INSTRUCTION},
        {"role": "assistant", "content": partial},
    ]


class OverlapTrimmer:
    """Drops what a model repeats from the end of the partial answer when it continues it.

    The start of the continuation is held back until ``window`` characters arrived (or the stream ended),
    then the longest prefix of it that the partial answer ends with is removed. Overlaps shorter than
    ``min_overlap`` are kept (unless they are the whole partial answer): they are usually coincidences.
    """

    def __init__(self, partial: str, window: int = 64, min_overlap: int = 8) -> None:
        self.partial = partial
        self.window = window
        self.min_overlap = min_overlap
        self.held = ""
        self.released = not partial

    def feed(self, text: str) -> str:
        if self.released:
            return text
        self.held += text
        return self.flush() if len(self.held) >= self.window else ""

    def flush(self) -> str:
        if self.released:
            return ""
        self.released = True
        held, self.held = self.held, ""
        return held[self._overlap(held) :]

    def _overlap(self, text: str) -> int:
        for size in range(min(len(self.partial), len(text)), 0, -1):
            if (size >= self.min_overlap or size == len(self.partial)) and self.partial.endswith(text[:size]):
                return size
        return 0
