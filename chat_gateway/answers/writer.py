"""How an answer being generated reaches persistence: the append path, read top to bottom.

One writer per answer, so offsets never race. It saves the text in batches (every ``flush_interval_seconds``,
or sooner once ``flush_bytes`` are waiting), renews the lease while the upstream is silent, and fences the
relay: past the lease's deadline no text is shown before persistence confirms the lease is still ours.

An answer another model goes on with mid-answer (chat_gateway/answers/parts.py) reaches persistence part by part:
the text before the boundary first, then an append that names the new model, once, where its part begins.
"""

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Literal

from chat_gateway.answers.lease import Lease
from chat_gateway.answers.parts import AnswerParts
from chat_gateway.answers.text import AnswerText
from chat_gateway.clients import retry
from chat_gateway.clients.persistence import AnswerStore, PersistenceError
from chat_gateway.config import Settings
from shared import Conflict, MessageStatus, NotFound, OffsetMismatch, ServiceUnavailable
from shared.contract import AnswerFinish

logger = logging.getLogger(__name__)

StopReason = Literal["cancelled", "lease_lost", "deleted", "refused", "shutdown"]


class AnswerWriter:
    """Saves ``buffer``'s text from where persistence's copy ends (``buffer.saved``), under this gateway's lease.

    A write persistence refuses for good stops the generation through ``stop``: ``lease_lost`` (taken over
    or cancelled), ``deleted`` (its session went), ``refused`` (a 4xx no retry changes; ``refused`` says why).
    """

    def __init__(
        self,
        message_id: uuid.UUID,
        *,
        buffer: AnswerText,
        persistence: AnswerStore,
        settings: Settings,
        stop: Callable[[StopReason], None],
        lease: Lease,
        parts: AnswerParts | None = None,
    ) -> None:
        self.message_id = message_id
        self.parts = parts
        self.buffer = buffer
        self.persistence = persistence
        self.settings = settings
        self._stop = stop
        self.refused: str | None = None  # why persistence refused a write for good; nothing is saved after it
        self.lease = lease
        self._renewed: asyncio.Future[None] | None = None  # a renewal the relay waits for (fence)
        self._last_write = time.monotonic()
        self._flush_now = asyncio.Event()
        self._closing = False

    @property
    def saved(self) -> int:
        """How much of the text persistence is known to hold."""
        return self.buffer.saved

    def _text(self) -> str:
        return self.buffer.text

    def wake(self) -> None:
        """Write now rather than at the next interval."""
        self._flush_now.set()

    async def run(self) -> None:
        """Save what is new, or renew the lease, until ``close``."""
        heartbeat = self.lease.seconds / 3
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), timeout=self.settings.flush_interval_seconds)
            self._flush_now.clear()
            if self._closing:
                return
            renewal_awaited = self._renewed is not None and not self._renewed.done()
            if len(self._text()) > self.saved or time.monotonic() - self._last_write >= heartbeat or renewal_awaited:
                await self._write()

    def close(self) -> None:
        """End ``run`` after the write in flight, if any: one cut off could be stored without us knowing its
        new length. What is left is saved by ``flush_all``."""
        self._closing = True
        self._flush_now.set()

    async def fence(self) -> None:
        """Before more text is relayed: wait until the lease is known to be ours.

        Past its deadline (this process was paused longer than the lease: a frozen VM, a long GC, a blocked
        loop) another gateway may have taken the answer over and be writing its own text: the writer renews
        the lease first, and if it was lost, the generation is stopped and its listeners follow the new owner.
        """
        while self.lease.lapsed():
            if self._renewed is None or self._renewed.done():
                self._renewed = asyncio.get_running_loop().create_future()
            renewed = self._renewed
            self._flush_now.set()
            await asyncio.shield(renewed)
            if self.lease.lapsed():  # persistence unreachable: try again shortly
                await asyncio.sleep(min(1.0, self.settings.flush_interval_seconds))

    async def flush_all(self, lease_seconds: float | None = None, finish: AnswerFinish | None = None) -> bool:
        """Save all the text with one last write, retried (``retry.last_save``) until it is all saved or time is up."""
        return bool(await retry.last_save(self.settings)(self._save_all, lease_seconds, finish))

    async def _save_all(self, lease_seconds: float | None, finish: AnswerFinish | None) -> bool:
        while self._part_end(self._end_to_save()) < self._end_to_save():  # each part's text before the next's
            if not await self._write():
                return False
        return await self._write(lease_seconds, finish) and self.saved == self._end_to_save()

    def _part_end(self, end: int) -> int:
        """Where the unsaved text up to ``end`` stops being the same part's: an append holds one part's text."""
        if self.parts is None or not self.parts.several:
            return end
        return self.parts.next_boundary(self.saved, end)

    def _model_to_name(self, end: int) -> str | None:
        """The model that writes from where persistence's copy ends, when its part begins there (named once: an
        append that names it costs persistence more)."""
        if self.parts is None or not self.parts.renamed or end <= self.saved:
            return None
        return self.parts.model_at(self.saved)

    def _end_to_save(self) -> int:
        return self.saved if self.refused is not None else len(self._text())

    async def _write(self, lease_seconds: float | None = None, finish: AnswerFinish | None = None) -> bool:
        """Save the unsaved text (or just renew the lease; or end the answer, with ``finish``).

        False when persistence is unreachable.
        """
        end = self._part_end(self._end_to_save())
        if end < self._end_to_save():  # the rest is another model's: written next, and the answer ended after it
            finish, lease_seconds = None, None
            self._flush_now.set()
        sent = time.monotonic()
        try:
            saved = await self.persistence.append(
                self.message_id,
                self.saved,
                self._text()[self.saved : end],
                owner=self.lease.owner,
                lease_seconds=lease_seconds or self.lease.seconds,
                finish=finish,
                model=self._model_to_name(end),
            )
            self.buffer.mark_saved(saved)
        except ServiceUnavailable as exc:
            logger.warning("answer %s: text kept in memory, persistence unreachable: %s", self.message_id, exc)
            return False
        except Conflict as exc:
            if isinstance(exc, OffsetMismatch) and await self._caught_up():
                return await self._write(lease_seconds, finish)
            # Cancelled, or taken over after our lease expired: the answer is no longer ours to write.
            logger.warning("answer %s: lease lost (%s)", self.message_id, exc.detail)
            self._stop("lease_lost")
            raise
        except NotFound:
            # Its session was deleted: generating the rest would only cost tokens.
            logger.info("answer %s: deleted while generated, generation stopped", self.message_id)
            self._stop("deleted")
            raise
        except PersistenceError as exc:
            # A 4xx no retry changes. Left in progress, the answer would be generated again by crash recovery
            # and refused again, for ever: it ends failed instead, with the text stored so far.
            logger.error("answer %s: persistence refused a write: %s", self.message_id, exc.detail)
            self.refused = self.refused or exc.detail
            self._stop("refused")
            raise
        finally:
            if self._renewed is not None and not self._renewed.done():
                self._renewed.set_result(None)
        self._last_write = time.monotonic()
        if finish is None:
            self.lease.renewed(sent, lease_seconds)
        return True

    async def _caught_up(self) -> bool:
        """After an append whose answer was lost: is what is stored still ours and a prefix of our text?"""
        try:
            stored = await self.persistence.get(self.message_id)
        except ServiceUnavailable:
            return False
        text = self._text()
        ours = stored.lease_owner == self.lease.owner and stored.status == MessageStatus.IN_PROGRESS
        if ours and len(stored.content) > self.saved and text.startswith(stored.content):
            self.buffer.mark_saved(len(stored.content))
            return True
        return False
