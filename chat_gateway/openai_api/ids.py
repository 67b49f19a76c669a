"""The ids OpenAI's APIs name the gateway's things by: a response is an answer (``resp_<its id>``), a conversation
a session (``conv_<its id>``). Each is parsed here once: as a route's path parameter (``ResponsePath``,
``ConversationPath``, in deps.py) or a request's field. One that names nothing is a 404, as an unknown one is."""

import contextlib
import uuid
from dataclasses import dataclass

from shared import NotFound

RESPONSE_PREFIX = "resp_"
CONVERSATION_PREFIX = "conv_"


def response_id(message_id: uuid.UUID) -> str:
    return f"{RESPONSE_PREFIX}{message_id.hex}"


def conversation_id(session_id: uuid.UUID) -> str:
    return f"{CONVERSATION_PREFIX}{session_id.hex}"


def message_id_of(response: str) -> uuid.UUID:
    """The answer a response id names."""
    if response.startswith(RESPONSE_PREFIX):
        with contextlib.suppress(ValueError):
            return uuid.UUID(hex=response[len(RESPONSE_PREFIX) :])
    raise NotFound(f"no response {response!r}")


def session_of(conversation: str) -> uuid.UUID:
    """The session a conversation id names (its prefix may be left out)."""
    try:
        return uuid.UUID(hex=conversation.removeprefix(CONVERSATION_PREFIX))
    except ValueError:
        raise NotFound(f"no conversation {conversation!r}") from None


@dataclass(frozen=True, slots=True)
class Named:
    """An id as its client wrote it (echoed back as written), and the gateway's own id it names."""

    text: str
    id: uuid.UUID


async def response_path(response_id: str) -> Named:
    """A route's ``{response_id}``, parsed before the route runs (``deps.ResponsePath``)."""
    return Named(response_id, message_id_of(response_id))


async def conversation_path(conversation_id: str) -> Named:
    """A route's ``{conversation_id}``, parsed before the route runs (``deps.ConversationPath``)."""
    return Named(conversation_id, session_of(conversation_id))
