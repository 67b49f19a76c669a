"""This gateway's lease on an answer it generates: who holds it, for how long, and until when it is surely ours.

Persistence runs a lease out ``seconds`` after it receives the request that grants or renews it, so after that
request was sent: counted from the sending, on this process's monotonic clock, the lease is surely ours until
``deadline``. Past it (this process paused longer than the lease), another gateway may have taken the answer
over, and no text is relayed before a renewal confirms the lease (``AnswerWriter.fence``).
"""

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared.contract import MessageDetail


@dataclass
class Lease:
    owner: str  # this gateway's INSTANCE_ID
    seconds: float
    deadline: float = field(init=False)  # kept, not computed: the relay asks lapsed() for every chunk
    granted_at: float = field(default_factory=time.monotonic)  # when the request that granted it was sent

    def __post_init__(self) -> None:
        self.deadline = self.granted_at + self.seconds

    def renewed(self, sent_at: float, seconds: float | None = None) -> None:
        """A write sent at ``sent_at`` renewed it, for ``seconds`` (default: its own)."""
        self.deadline = sent_at + (seconds or self.seconds)

    def lapsed(self) -> bool:
        """Whether it may no longer be ours."""
        return time.monotonic() >= self.deadline


def lease_is_live(answer: MessageDetail) -> bool:
    """Whether the answer's lease, as stored, still runs (whoever holds it)."""
    return answer.lease_expires_at is not None and answer.lease_expires_at > datetime.now(UTC)
