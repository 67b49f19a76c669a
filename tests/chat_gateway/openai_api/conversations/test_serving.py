"""A conversation's object, as its routes document it: the SDK's own ``Conversation``."""

import uuid
from datetime import UTC, datetime

from openai.types.conversations import Conversation

from chat_gateway.openai_api.conversations.serving import conversation_object
from shared.resources import SessionRead

AT = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_conversation_is_the_sdks_conversation_its_metadata_an_object_even_unset() -> None:
    for metadata in ({"team": "maps"}, None):
        session = SessionRead(
            id=uuid.UUID(int=3),
            user_id="u",
            title="t",
            is_favorite=False,
            metadata=metadata,
            created_at=AT,
            updated_at=AT,
        )
        read = Conversation.model_validate(conversation_object(session))
        assert (read.id, read.created_at, read.metadata) == (
            f"conv_{uuid.UUID(int=3).hex}",
            int(AT.timestamp()),
            metadata or {},
        )
