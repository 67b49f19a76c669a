"""Which session holds a client's conversation, found by the key its client sent it under
(``conversation_key``): where a conversation sent whole each time (OpenAI's APIs) goes on, without a session id.
"""

import uuid
from collections.abc import Sequence

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from persistence.models import ChatSession, Message
from persistence.services.message_rows import CHRONOLOGICAL
from shared import MessageRole, NotFound
from shared.contract import ConversationFind, ConversationFound
from shared.resources import ToolCall


def find_conversation(db: Session, data: ConversationFind) -> ConversationFound:
    """The session a client's conversation goes on in: the newest of the user's answers with that key which is
    the one the client resent (same text, same calls: their arguments as JSON values) and is still its session's
    last message, or is followed only by the results this request sends (a retried round). Else 404: an
    edited history, or a branch from an earlier answer, starts a session of its own."""
    candidates = db.execute(
        select(Message.id, Message.session_id, Message.content, Message.tool_calls)
        .join(ChatSession, ChatSession.id == Message.session_id)
        .where(Message.conversation_key == data.conversation_key, ChatSession.user_id == data.user_id)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(8)
    ).all()
    resent = [call.as_resent() for call in data.tool_calls or []]
    for candidate in candidates:
        stored_calls = [ToolCall.model_validate(call).as_resent() for call in candidate.tool_calls or []]
        if candidate.content != data.content or stored_calls != resent:
            continue
        after = db.execute(
            select(Message.role, Message.tool_call_id)
            .where(
                Message.session_id == candidate.session_id,
                Message.created_at > select(Message.created_at).where(Message.id == candidate.id).scalar_subquery(),
            )
            .order_by(Message.created_at, Message.id)
            .limit(len(data.results_of) + 2)
        ).all()
        if not after or _is_this_round(after, data.results_of):
            return ConversationFound(session_id=candidate.session_id, answer_id=candidate.id)
    raise NotFound("no session holds this conversation")


def whole_conversation(db: Session, key: str, user_id: str) -> uuid.UUID | None:
    """The newest session of ``user_id`` whose last message its client added under ``key``: it holds that whole
    conversation (``MessageCreate.conversation_key``)."""
    rows = db.execute(
        select(Message.id, Message.session_id)
        .join(ChatSession, ChatSession.id == Message.session_id)
        .where(Message.conversation_key == key, ChatSession.user_id == user_id, Message.role != MessageRole.ASSISTANT)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(8)
    ).all()
    for row in rows:
        last = db.scalar(
            select(Message.id)
            .where(Message.session_id == row.session_id)
            .order_by(*(column.desc() for column in CHRONOLOGICAL))
            .limit(1)
        )
        if last == row.id:
            return uuid.UUID(str(row.session_id))
    return None


def _is_this_round(after: Sequence[Row[MessageRole, str | None]], results_of: list[str]) -> bool:
    """Whether what follows an answer is exactly the round resent: its results, in order, and perhaps their
    answer; anything else (another result, an edited one's id, a later question) is another conversation."""
    results = [(MessageRole.TOOL, call_id) for call_id in results_of]
    rounds = [(row.role, row.tool_call_id) for row in after]
    return (
        bool(results)
        and rounds[: len(results)] == results
        and len(rounds) <= len(results) + 1
        and all(role == MessageRole.ASSISTANT for role, _ in rounds[len(results) :])
    )
