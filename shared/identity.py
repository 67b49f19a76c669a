"""Who calls, what they may spend, what they spent: the contract between the gateway and persistence.

Persistence stores user keys (hashed), per-user limits and the usage ledger; the gateway authenticates its
callers with them and scopes every request to the caller's own data (``ON_BEHALF_OF``).
"""

import re
import uuid
from datetime import date, datetime
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints
from pydantic_core import PydanticCustomError

from shared.schemas import InputModel, ReadModel, UTCDatetime

# A service-level request made for one user: persistence answers it as if nobody else's data existed
# (another user's session or message is a 404). Its value is the user id, percent-encoded (``quote``).
ON_BEHALF_OF = "X-On-Behalf-Of"
# Every user key starts so: recognisable in a leaked config, never a JWT, and anything else is refused unread.
USER_KEY_PREFIX = "dck_"
# Whose a chat is when nobody says (open mode, an admin naming no user).
DEFAULT_USER = "anonymous"
# Whose the chats written through the original message API (/messages/) are.
LEGACY_USER = "legacy"
# Owners the services file chats under themselves, never a person: a key or a token for one would list and
# search every chat filed there, so none is ever issued or accepted for them.
RESERVED_USERS = frozenset({DEFAULT_USER, LEGACY_USER})

# The one rule for a user id, wherever it comes from (a body, a key, a token's claim, a path): 1 to 255 characters,
# none of them a control character (a line break, a tab...), which paths and headers lose or refuse on the way.
MAX_USER_ID = 255
_CONTROL = r"\x00-\x1f\x7f-\x9f"
UserId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_USER_ID, pattern=f"^[^{_CONTROL}]+$")]
_HAS_CONTROL = re.compile(f"[{_CONTROL}]")


def usable_user_id(user_id: str) -> bool:
    """Whether ``user_id`` follows the rule of ``UserId``."""
    return 0 < len(user_id) <= MAX_USER_ID and not _HAS_CONTROL.search(user_id)


def _not_reserved(user_id: str) -> str:
    if user_id in RESERVED_USERS:
        raise PydanticCustomError(
            "reserved_user_id",
            "'{user_id}' is a built-in owner of shared chats, not a user: choose another user id",
            {"user_id": user_id},
        )
    return user_id


# A user a key may be created or limits set for: any user id but the reserved ones.
PersonId = Annotated[UserId, AfterValidator(_not_reserved)]
KeyName = Annotated[str, StringConstraints(max_length=200)]
MAX_TOKENS = 2**62  # a BIGINT holds every sum of them that can happen
# How text is counted in tokens until an upstream says (budgets, continuations' max_tokens): about four
# characters a token in English, fewer in most other languages, so a reservation errs low there.
CHARS_PER_TOKEN = 4
Count = Annotated[int, Field(ge=1, le=MAX_TOKENS)]


class Limits(InputModel):
    """Per-user limits; null: none of its own (a key's falls back to its user's, a user's to the default)."""

    requests_per_minute: Count | None = None
    tokens_per_day: Count | None = None
    tokens_per_month: Count | None = None

    def over(self, fallback: "Limits") -> "Limits":
        """These limits, each unset one taken from ``fallback``."""
        mine = self.model_dump(exclude_none=True)
        return Limits.model_validate(fallback.model_dump() | mine)


class KeyCreate(InputModel):
    user_id: PersonId
    name: KeyName | None = None
    expires_at: UTCDatetime | None = None
    limits: Limits = Field(default_factory=Limits)


class KeyRead(ReadModel):
    """A user key as stored: never the key itself, only the first characters of it."""

    id: uuid.UUID
    user_id: str
    name: str | None
    prefix: str = Field(description="The key's first characters, to tell keys apart.")
    limits: Limits
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class KeyCreated(KeyRead):
    key: str = Field(description="The key: shown this once, stored only as a hash.")


class KeyCheck(InputModel):
    key: Annotated[str, StringConstraints(min_length=1, max_length=512)]


class KeyIdentity(ReadModel):
    """Whom a valid key belongs to, and the limits that apply to it (the key's, else its user's)."""

    key_id: uuid.UUID
    user_id: str
    limits: Limits


class UserLimits(ReadModel):
    user_id: str
    limits: Limits


class TurnAccount(InputModel):
    """Whose answer a turn's is, and the token budgets it must fit in: checked before the turn is stored."""

    user_id: UserId
    reserve_tokens: Annotated[int, Field(ge=0, le=MAX_TOKENS)] = Field(
        default=0, description="What the answer counts for until its usage is known (its max_tokens)."
    )
    prompt_tokens: Annotated[int, Field(ge=0, le=MAX_TOKENS)] = Field(
        default=0,
        description="Of reserve_tokens, the prompt's estimate: charged if the run ends without the upstream's figures.",
    )
    history_chars: Annotated[int, Field(ge=0, le=2**30)] = Field(
        default=0,
        description="The answer's prompt also carries up to this many characters of its session's stored history "
        "(the messages before it): persistence adds what the session holds, so bounded, to the reservation.",
    )
    tokens_per_day: Count | None = None
    tokens_per_month: Count | None = None

    @property
    def has_budget(self) -> bool:
        return self.tokens_per_day is not None or self.tokens_per_month is not None


class UsageRow(ReadModel):
    day: date
    user_id: str
    model: str | None
    answers: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    estimated_tokens: int = Field(description="Of total_tokens, how many are estimated (the upstream sent none).")
    pending_answers: int = Field(description="Answers being generated: their tokens so far are not counted yet.")


class UsageTotal(ReadModel):
    key: str = Field(description="The day (YYYY-MM-DD) or the model (empty: none recorded).")
    answers: int
    total_tokens: int


class UsageReport(ReadModel):
    since: date
    until: date
    user_id: str | None = Field(description="Whose usage; null: every user's.")
    total_tokens: int
    by_day: list[UsageTotal]
    by_model: list[UsageTotal]
    rows: list[UsageRow] = Field(description="Totals by day, user and model.")
