"""What one chat request stores: its ids, its session's title, the turn (question and claimed answer) and the
account it is charged to; and how a budget's refusal of it is told to its client."""

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from chat_gateway.answers.plan import ChatPlan
from chat_gateway.answers.prompt import question_messages
from chat_gateway.auth.identity import Caller
from chat_gateway.chat.protocol import ChatRequest
from chat_gateway.config import Settings
from shared import Conflict, DomainError, ErrorCode, JSONObject, TooManyRequests
from shared.contract import MessageDetail, TurnAnswer, TurnCreate, TurnSession
from shared.identity import TurnAccount

_IDS = uuid.UUID("5f1d0c3e-8a59-4a8e-9a43-6d1c2f0b7e21")


@dataclass(frozen=True)
class ChatIds:
    session: uuid.UUID
    inputs: list[uuid.UUID]
    answer: uuid.UUID
    derived: bool  # from the request: a retry of it finds the same rows, so it is not surely new


def chat_ids(
    idempotency_key: str | None, user_id: str, request: ChatRequest, conversation_key: str | None = None
) -> ChatIds:
    """Ids of the session, the inputs (tool results, question) and the answer of one chat request.

    With an Idempotency-Key they are derived from it, so a retried request finds the same rows (and the
    same answer) instead of starting a second, billed generation. So are those of an OpenAI client's agent
    round in a known session, from the whole conversation it sends (``conversation_key``: every call, every
    result, in order): a client retrying the round gets the answer to those results, not a second one, and no
    other round, even one answering calls of the same ids, has the same. Otherwise they are random, and still
    make the gateway's own retries of each write safe.
    """
    count = len(request.tool_results or []) + (request.message is not None or request.parts is not None)
    seed = None
    if idempotency_key is not None:
        seed = hashlib.sha256(f"{user_id}\x00{idempotency_key}".encode()).hexdigest()
    elif request.tool_results and request.session_id is not None and conversation_key is not None:
        seed = hashlib.sha256(f"{user_id}\x00{request.session_id}\x00{conversation_key}".encode()).hexdigest()
    if seed is None:
        return ChatIds(uuid.uuid4(), [uuid.uuid4() for _ in range(count)], uuid.uuid4(), derived=False)
    # The first input's id is the question's as it was before agents' rounds: retries across the upgrade match.
    inputs = [uuid.uuid5(_IDS, f"{seed}:user" if i == 0 else f"{seed}:input{i}") for i in range(count)]
    return ChatIds(uuid.uuid5(_IDS, f"{seed}:session"), inputs, uuid.uuid5(_IDS, f"{seed}:answer"), derived=True)


def token_limit(options: JSONObject) -> int | None:
    """An answer's token limit as an upstream reads it: the larger, where a client sends both names (vLLM honours
    max_completion_tokens, OpenAI either)."""
    limits = [value for name in ("max_tokens", "max_completion_tokens") if isinstance(value := options.get(name), int)]
    return max(limits) if limits else None


def options_chars(options: JSONObject) -> int:
    """What of an answer's options its upstream reads as prompt: its tools and response format, as sent."""
    return len(json.dumps([options.get("tools"), options.get("response_format")]))


def over_budget(exc: Conflict) -> TooManyRequests:
    """Persistence's refusal of a turn past a token budget, as its client is told it: a 429 to wait out.

    Persistence says it with a 409 (a conflict with the user's ledger) because its client retries its 429s
    (its own rate limit, a wait); this refusal no retry changes before the budget renews.
    """
    extra = exc.extra
    retry_after = str(extra.get("retry_after", 60))
    headers = {
        "Retry-After": retry_after,
        "X-RateLimit-Limit-Tokens": str(extra.get("limit", "")),
        "X-RateLimit-Remaining-Tokens": "0",
        "X-RateLimit-Reset-Tokens": f"{retry_after}s",
    }
    return TooManyRequests(exc.detail, code=ErrorCode.BUDGET_EXCEEDED, headers=headers, **extra)


def turn_refused(exc: Conflict) -> DomainError:
    """Persistence's refusal of a turn, as its client is told it: past a budget, or an Idempotency-Key reused."""
    if exc.code == ErrorCode.BUDGET_EXCEEDED:
        return over_budget(exc)
    return Conflict("this Idempotency-Key was used for a different request", code=ErrorCode.IDEMPOTENCY_CONFLICT)


def title_from(message: str) -> str:
    words = " ".join(message.split())
    return (words[:77] + "...") if len(words) > 80 else words or "New chat"


def build_turn(settings: Settings, plan: ChatPlan, ids: ChatIds, model: str) -> tuple[TurnCreate, TurnAccount]:
    """The turn persistence stores: what the answer answers, the answer claimed by this gateway, whose it is."""
    request = plan.request
    options = request.options.given() if request.options is not None else {}
    account = _account(settings, plan, options)
    session = None
    if plan.new_session or plan.create_session:
        session = TurnSession(user_id=plan.owner, title=title_from(request.text()))
        if plan.caller.owns_exclusively(request.user_id):  # set only when it is: the default goes unsent (bytes)
            session.exclusive = True
    turn = TurnCreate(
        session=session,
        inputs=request.inputs(ids.inputs),
        answer=_answer(settings, plan, ids.answer, model, options),
        owner=settings.instance_id,
        lease_seconds=settings.lease_seconds,
        account=account,
        sent_at=datetime.now(UTC),  # replays carry it too: a late one is no newer a chat (_may_have_been_refused)
    )
    if plan.follows_added and plan.conversation_key is not None:
        turn.follows_added = True
    return turn, account


def _answer(settings: Settings, plan: ChatPlan, answer_id: uuid.UUID, model: str, options: JSONObject) -> TurnAnswer:
    """The answer stored with its turn, and what it keeps for its client: to be found again, to be continued."""
    prompt = plan.known_prompt
    request = plan.request
    # A client's own prompt, which the stored history would not give back, is kept for a continuation.
    own_prompt = prompt is not None and prompt != question_messages(request.text(), request.context, request.parts)
    answer = TurnAnswer(
        id=answer_id,
        model=model,
        options=options or None,
        prompt=cast(list[JSONObject], prompt) if own_prompt else None,
    )
    if plan.conversation_key is not None:  # set only when it is: the default goes unsent (bytes per turn)
        answer.conversation_key = plan.conversation_key
    if plan.request_key is not None:
        answer.request_key = plan.request_key
        answer.retry_seconds = settings.retry_window_seconds if plan.retry_window is None else plan.retry_window
    if plan.response is not None:  # its input items are read from its prompt, kept whatever it is
        answer.response = plan.response
        answer.prompt = answer.prompt or cast(list[JSONObject], prompt)
    return answer


def _account(settings: Settings, plan: ChatPlan, options: JSONObject) -> TurnAccount:
    """Whose the turn is, and what it may cost until its usage is known: its prompt (the client's, else the
    question and the session's stored history, up to what a prompt carries of it, which persistence counts) and
    its max_tokens."""
    # Measured for a user's account only: the JSON of a whole prompt costs every other turn for nothing.
    prompt_chars = history_chars = 0
    if plan.caller.is_user:
        sent: object = plan.known_prompt
        if sent is None:  # what the stored history's prompt adds to it: the inputs, whole, and their context
            request = plan.request
            sent = [
                request.message,
                request.parts,
                request.context,
                [r.model_dump() for r in request.tool_results or []],
            ]
            history_chars = settings.history_budget_chars
        prompt_chars = len(json.dumps(sent)) + options_chars(options)
    max_tokens = token_limit(options)
    reserve = settings.budget_reserve_tokens
    return plan.caller.account(
        plan.owner, max_tokens=max_tokens, prompt_chars=prompt_chars, reserve=reserve, history_chars=history_chars
    )


def resume_account(settings: Settings, caller: Caller, answer: MessageDetail) -> TurnAccount:
    """A new run's account, for an answer resumed by ``caller``."""
    options = answer.options or {}
    # Its prompt: the client's own, kept with it, else its session's history (persistence counts it); its
    # tools; and its text so far, sent to be continued.
    prompt_chars = len(answer.content) + (len(json.dumps(answer.prompt)) if answer.prompt is not None else 0)
    prompt_chars += options_chars(options)
    history_chars = settings.history_budget_chars if answer.prompt is None else 0
    return caller.account(
        caller.owner(None),
        max_tokens=token_limit(options),
        prompt_chars=prompt_chars,
        reserve=settings.budget_reserve_tokens,
        history_chars=history_chars,
    )
