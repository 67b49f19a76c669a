"""What the model is shown: the session's history within a budget, the RAG context, a partial answer."""

import json
import uuid
from typing import Any, cast

from openai.types.chat import ChatCompletionMessageParam

from chat_gateway.clients.persistence import AnswerStore
from chat_gateway.config import ContinuationMethod
from shared import JSONObject, MessageRole
from shared.contract import MessageDetail

# For an upstream that answers with a new message, when the answer so far has no words to repeat.
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


# A repeat as a reply may begin with it: text to match exactly, and None where any whitespace (or none) may be.
Form = tuple[str | None, ...]


def _match(form: Form, text: str) -> int | None:
    """Where ``form`` ends in ``text`` once whole (-1 while ``text`` may still become it), None when it cannot."""
    at = 0
    for part in form:
        if part is None:
            while at < len(text) and text[at].isspace():
                at += 1
            if at == len(text):
                return -1
        elif text.startswith(part, at):
            at += len(part)
        elif part.startswith(text[at:]):
            return -1
        else:
            return None
    return at


class Continuation:
    """How an interrupted answer is continued (the upstream's ``ContinuationMethod``), and how what the upstream
    sends next joins its text. The partial answer always goes last, as an assistant message.

    ============  ==========================================  =============================================
    method        what it is sent                             what is cut from what it sends
    ============  ==========================================  =============================================
    ``exact``     the partial answer (llama.cpp's             nothing: it continues the text itself
                  llama-server, which leaves that turn open)  (assistant prefill), so a repeat is the
                                                              answer's own (a table's rows, "ha ha ha")
    ``vllm``      the same, with ``continue_final_message``   nothing, as ``exact``
                  and not ``add_generation_prompt`` (vLLM
                  opens a new message otherwise)
    ``prefix``    the same, marked ``"prefix": true``         the partial answer, if the reply begins with
                  (Mistral's and DeepSeek's APIs)             all of it: Mistral's returns the prefix too
    ``restart``   the same, and an instruction to begin by    that anchor, once, if the reply begins with
                  repeating its last words, the *anchor*,     it, in its brackets or not, after any
                  between ``[[`` and ``]]`` (OpenAI)          whitespace; else nothing
    ============  ==========================================  =============================================

    Text is never cut because it *looks* repeated: only the one repeat the method asks for (or, for
    ``prefix``, the echo its API documents), and only at the very start of the reply. The residual risk,
    ``restart`` only: a model that ignores the instruction and whose true continuation begins with exactly the
    anchor (the same words again), or ends within the anchor's first words, loses that one repeat; one that
    repeats more than the anchor keeps the surplus twice.
    """

    def __init__(self, partial: str, method: ContinuationMethod) -> None:
        self.partial = partial
        self.method = method
        self.anchor = continuation_anchor(partial) if method == "restart" and partial.strip() else ""
        self._forms = self._repeats()
        self._held = ""
        self._released = not self._forms

    def _repeats(self) -> list[Form]:
        """The forms of the one repeat that is cut: the anchor as asked, with or without its brackets (a model
        that obeys loosely writes them too, or opens them and goes on), or the prefix echoed whole."""
        if self.anchor:
            words = self.anchor.strip()
            return [
                (None, self.anchor.lstrip()),
                (None, "[[", None, words),
                (None, "[[", None, words, None, "]]"),
            ]
        if self.method == "prefix" and self.partial:
            return [(self.partial,)]
        return []

    def messages(self, prompt: list[ChatCompletionMessageParam]) -> list[ChatCompletionMessageParam]:
        """The prompt to continue the partial answer from: it goes last, as an assistant message (the form
        OpenAI-compatible servers continue from). Only a restarting upstream is told what to do, before it, never
        after: one that continues the text itself is asked with the answer's own prompt, since another prompt
        is another answer (at temperature 0, a different one from the first changed word: docs/reliability.md)."""
        if not self.partial:
            return prompt
        last: dict[str, Any] = {"role": "assistant", "content": self.partial}
        if self.method == "prefix":
            # Mistral's API spec: "Set this to `true` when adding an assistant message as prefix to condition the
            # model response" (AssistantMessage.prefix); DeepSeek's "Chat Prefix Completion (Beta)" the same.
            last["prefix"] = True
        if self.method != "restart":
            return [*prompt, cast(ChatCompletionMessageParam, last)]
        instruction = RESTART_INSTRUCTION.format(anchor=self.anchor) if self.anchor else CONTINUE_INSTRUCTION
        return [*prompt, {"role": "system", "content": instruction}, cast(ChatCompletionMessageParam, last)]

    def request_fields(self) -> JSONObject:
        """What the request carries besides the answer's own options."""
        if self.method != "vllm" or not self.partial:
            return {}
        # vLLM's ChatCompletionRequest: continue_final_message "formats the chat so that the final message is
        # open-ended, without any EOS tokens. The model will continue this message rather than starting a new
        # one... Cannot be used at the same time as `add_generation_prompt`", which defaults to true.
        return {"continue_final_message": True, "add_generation_prompt": False}

    def feed(self, text: str) -> str:
        """What of ``text`` goes after the answer so far (the start is held while it may be the repeat)."""
        if self._released:
            return text
        self._held += text
        ends = [_match(form, self._held) for form in self._forms]
        if -1 in ends:
            return ""  # may still become the repeat, or a longer form of it
        return self._release(self._held[max((end for end in ends if end is not None), default=0) :])

    def flush(self) -> str:
        """At the end of the stream: what is still held (a reply that stopped inside the repeat repeated it)."""
        if self._released:
            return ""
        ends = [_match(form, self._held) for form in self._forms]
        if whole := [end for end in ends if end is not None and end >= 0]:
            return self._release(self._held[max(whole) :])
        return self._release("" if -1 in ends else self._held)

    def _release(self, text: str) -> str:
        self._released, self._held = True, ""
        return text
