"""Export a session as a document (JSON or Markdown) and import such a document back."""

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from persistence.models import ChatSession, Message, utcnow
from persistence.schemas import ExportedMessage, ExportedSession, ImportResult, SessionExport
from persistence.services.messages import _tool_columns
from persistence.services.sessions import _get_session
from shared import MessageRole, MessageStatus, SessionRead


def export_session(db: Session, session_id: uuid.UUID) -> SessionExport:
    chat = _get_session(db, session_id)
    messages = db.scalars(
        select(Message).where(Message.session_id == session_id).order_by(Message.created_at, Message.id)
    )
    return SessionExport(
        session=ExportedSession.model_validate(chat),
        messages=[ExportedMessage.model_validate(message) for message in messages],
    )


def _taken(db: Session, model: type[ChatSession] | type[Message], ids: list[uuid.UUID]) -> set[uuid.UUID]:
    return set(db.scalars(select(model.id).where(model.id.in_(ids)))) if ids else set()


def import_session(db: Session, document: SessionExport) -> ImportResult:
    """Store the document in one transaction (all of it or nothing).

    Ids are kept unless taken: a taken session id gives the session and all its messages new ids; a taken
    message id gives that message a new one.
    """
    remap_all = bool(_taken(db, ChatSession, [document.session.id]))
    taken = set() if remap_all else _taken(db, Message, [m.id for m in document.messages])
    data = document.session
    chat = ChatSession(
        id=uuid.uuid4() if remap_all else data.id,
        user_id=data.user_id,
        title=data.title,
        is_favorite=data.is_favorite,
        metadata_=data.metadata,
        created_at=data.created_at,
        updated_at=data.updated_at,
    )
    db.add(chat)
    now = utcnow()
    for message in document.messages:
        fields = message.model_dump(exclude={"id"}) | _tool_columns(message)
        # An answer imported mid-generation has nobody generating it: its lease is over, so it is resumed.
        lease = now if message.status == MessageStatus.IN_PROGRESS else None
        new_id = uuid.uuid4() if remap_all or message.id in taken else message.id
        db.add(Message(id=new_id, session_id=chat.id, lease_expires_at=lease, **fields))
    db.flush()
    return ImportResult(
        session=SessionRead.model_validate(chat), messages=len(document.messages), remapped=remap_all or bool(taken)
    )


def to_markdown(document: SessionExport) -> str:
    session = document.session
    lines = [
        f"# {session.title}",
        "",
        f"*Session `{session.id}` of {session.user_id}, started {session.created_at:%Y-%m-%d %H:%M} UTC.*",
    ]
    for message in document.messages:
        heading = f"## {message.role.value.capitalize()} · {message.sent_at:%Y-%m-%d %H:%M}"
        if message.status != MessageStatus.COMPLETE:
            heading += f" ({message.status.value}{': ' + message.error if message.error else ''})"
        lines += ["", heading, ""]
        if message.role == MessageRole.TOOL:
            lines += [f"*Result of `{message.name or 'a tool'}` (call `{message.tool_call_id}`):*", ""]
        lines += _markdown_body(message)
    return "\n".join(lines) + "\n"


def _markdown_body(message: ExportedMessage) -> list[str]:
    """A message's text, its images by reference, its tool calls: each readable, none dropped."""
    images = [part.get("image_url") for part in message.parts or [] if part.get("type") == "image_url"]
    # OpenAI's clients send {"url": ...}; some send the URL alone; anything else has no URL to show.
    urls = [image.get("url") if isinstance(image, dict) else image for image in images]
    lines = [message.content] if message.content else []
    lines += [f"![image]({url})" for url in urls if isinstance(url, str)]
    for call in message.tool_calls or []:
        lines += [
            "",
            f"**Calls `{call.function.name}`** (call `{call.id}`):",
            "",
            "```json",
            call.function.arguments,
            "```",
        ]
    if message.role == MessageRole.TOOL and message.content:
        lines = ["```", message.content, "```"]
    return lines or ["*(empty)*"]
