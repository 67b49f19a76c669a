"""Sessions and messages as persistence serves them: the gateway relays the same shapes to its clients."""

import uuid
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AliasChoices, Field, StringConstraints

from shared.enums import MessageRole, MessageStatus
from shared.schemas import JSONObject, ReadModel

Context = JSONObject | list[Any]
# No content is longer: a PostgreSQL text holds at most 1 GB. Larger numbers would not even be an int4 to it.
MAX_OFFSET = 2**30
# The columns' sizes: a model's API can send longer ones, which the gateway clips rather than lose an answer.
MODEL_MAX_LENGTH = 200
FINISH_REASON_MAX_LENGTH = 64
ModelName = Annotated[str, StringConstraints(max_length=MODEL_MAX_LENGTH)]
FinishReason = Annotated[str, StringConstraints(max_length=FINISH_REASON_MAX_LENGTH)]
T = TypeVar("T")


class Page(ReadModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last page.")


class SessionRead(ReadModel):
    id: uuid.UUID
    user_id: str
    title: str
    is_favorite: bool
    # The ORM attribute is metadata_ ("metadata" is taken by SQLAlchemy).
    metadata: JSONObject | None = Field(validation_alias=AliasChoices("metadata_", "metadata"))
    created_at: datetime
    updated_at: datetime


class MessageRead(ReadModel):
    id: uuid.UUID
    session_id: uuid.UUID
    role: MessageRole
    content: str
    context: Context | None
    status: MessageStatus
    error: str | None
    rating: bool | None
    model: str | None
    finish_reason: str | None
    usage: JSONObject | None
    options: JSONObject | None
    attempts: int
    version: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    sent_at: datetime
    created_at: datetime
    updated_at: datetime


class SearchHit(ReadModel):
    kind: Literal["message", "session"] = Field(description="A message's text matched, or a session's title.")
    session_id: uuid.UUID
    message_id: uuid.UUID | None
    title: str
    role: MessageRole | None
    snippet: str = Field(description="The matching text, matched words between ** and **.")
    rank: float = Field(description="Relevance: higher is better (only compare within one result list).")
    created_at: datetime
