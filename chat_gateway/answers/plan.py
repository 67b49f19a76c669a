"""What one chat request wants, said once: its entry point (chat/routes.py, openai_api/chat_start.py) builds a
``ChatPlan``, and ``Answers.start_chat`` and ``build_turn`` (turns.py) read it, rather than each layer passing
its parts on to the next."""

import functools
from dataclasses import dataclass

from openai.types.chat import ChatCompletionMessageParam

from chat_gateway.answers.prompt import question_messages
from chat_gateway.auth.identity import ANYONE, Caller
from chat_gateway.chat.protocol import ChatRequest
from shared import JSONObject


@dataclass(frozen=True)
class ChatPlan:
    request: ChatRequest
    # Whose chat it is, in which of their sessions, within which budgets (429 when one is spent).
    caller: Caller = ANYONE
    prompt: list[ChatCompletionMessageParam] | None = None  # a client's own (OpenAI's send theirs): not the history's
    create_session: bool = False  # ``request.session_id`` is created when it does not exist yet
    # Kept with the answer, for a client that names no session to find it (openai_api/session_matching.py).
    conversation_key: str | None = None
    # For the same request sent again without an Idempotency-Key to find its answer: it follows it while it is
    # generated, gets it once complete (for ``retry_window`` seconds, default RETRY_WINDOW_SECONDS), and resumes it
    # from its saved text if it failed.
    request_key: str | None = None
    retry_window: float | None = None
    # A request that named no session: its answer goes after its inputs if its client added them to a
    # conversation itself.
    follows_added: bool = False
    # What a Responses API client asked for (openai_api/responses/serving.py), kept with the answer.
    response: JSONObject | None = None

    @property
    def owner(self) -> str:
        """Whose the chat is."""
        return self.caller.owner(self.request.user_id)

    @property
    def scope(self) -> str | None:
        """Whose chats the request reaches (None: everyone's)."""
        return self.caller.scope(self.request.user_id)

    @property
    def new_session(self) -> bool:
        return self.request.session_id is None

    @functools.cached_property
    def known_prompt(self) -> list[ChatCompletionMessageParam] | None:
        """The prompt known before any history is read: the client's own, else a new chat's, which has none but
        its question; None: built from its session's history."""
        if self.prompt is not None or not self.new_session:
            return self.prompt
        request = self.request
        return question_messages(request.text(), request.context, request.parts)
