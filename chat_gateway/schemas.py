import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import ConfigDict, Field, StringConstraints

from shared import InputModel, JSONObject, MessageRole, MessageStatus, ReadModel


class ChatRequest(InputModel):
    message: Annotated[str, StringConstraints(min_length=1)]
    session_id: uuid.UUID | None = None
    user_id: Annotated[str, StringConstraints(min_length=1, max_length=255)] = "anonymous"
    context: JSONObject | list[Any] | str | None = Field(
        default=None, description="RAG context for this prompt; stored with the message, shown to the model."
    )
    model: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    stream: bool = False


class ChatResponse(ReadModel):
    response: str
    session_id: uuid.UUID
    message_id: uuid.UUID
    status: MessageStatus

    @classmethod
    def of(cls, answer: "StoredMessage") -> "ChatResponse":
        return cls(response=answer.content, session_id=answer.session_id, message_id=answer.id, status=answer.status)


class StoredMessage(ReadModel):
    """A message as the persistence service returns it (fields the gateway uses)."""

    model_config = ConfigDict(extra="ignore")

    id: uuid.UUID
    session_id: uuid.UUID
    role: MessageRole
    content: str
    context: Any = None
    status: MessageStatus
    error: str | None = None
    model: str | None = None
    finish_reason: str | None = None
    usage: JSONObject | None = None
    attempts: int = 0
    version: int = 1
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    created_at: datetime


class Health(ReadModel):
    status: str
