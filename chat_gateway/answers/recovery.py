"""Crash recovery: answers whose gateway died or froze (in progress, their lease run out), found by a scan every
RECOVERY_INTERVAL_SECONDS and taken over here; or failed, never generated, when their client may have been told
the chat failed (``NOT_STARTED``)."""

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from chat_gateway.answers.log import LogError
from chat_gateway.answers.service import NOT_STARTED, Answers, failed_update
from chat_gateway.metrics import RECOVERED
from shared import Conflict, PreconditionFailed
from shared.contract import MessageDetail

logger = logging.getLogger(__name__)

# Claims a scan has in flight: enough to overlap persistence's commits, few enough not to swamp it.
CLAIMS_AT_ONCE = 8


class Recovery:
    """The crash recovery of one gateway, generating what it takes over through its ``Answers``."""

    def __init__(self, answers: Answers) -> None:
        self.answers = answers
        self.settings = answers.settings
        self.messages = answers.persistence.messages
        self.log = answers.log

    async def scan_once(self) -> int:
        """Take over answers whose gateway died (lease expired while in progress); returns how many."""
        # All at once, each claim being a commit: a dead gateway's answers are many, and taken one after the
        # other the last would wait for all the others' claims (seconds, with a synchronous replica).
        claims = asyncio.Semaphore(CLAIMS_AT_ONCE)
        stale = await self.messages.stale(self.settings.instance_id)
        results = await asyncio.gather(*(self._recover(answer, claims) for answer in stale), return_exceptions=True)
        taken = sum(result is True for result in results)
        RECOVERED.inc(taken)
        if failed := [result for result in results if isinstance(result, BaseException)]:
            raise failed[0]  # said by the loop; every other orphan of the scan was seen to
        return taken

    async def _recover(self, answer: MessageDetail, claims: asyncio.Semaphore) -> bool:
        """Resume an orphan here, fail it if its client may have been told it failed, or leave it."""
        async with claims:
            if self.answers.busy_here(answer):
                return False
            if self._may_have_been_refused(answer) and not (shown := await self._was_shown(answer)):
                if shown is None:  # not known: asked again at the next scan
                    return False
                # Its gateway never wrote to it, not even to renew its lease, and has had time to give up on its
                # turn and tell its client the chat failed (_settle_turn): it ends failed, never generated. A retry
                # of the chat with its Idempotency-Key takes it up again.
                with contextlib.suppress(Conflict, PreconditionFailed):
                    await self.messages.update(answer.id, failed_update(NOT_STARTED), if_match=answer.version)
                return False
            if self.settings.recovery_mode == "fail":
                with contextlib.suppress(Conflict):
                    await self.messages.update(answer.id, failed_update("abandoned: its gateway stopped"))
                    return True
                return False
            with contextlib.suppress(Conflict):
                await self.answers.take_over(answer)
            return self.answers.generating(answer.id) is not None

    async def _was_shown(self, answer: MessageDetail) -> bool | None:
        """Whether an answer with nothing saved had text shown to its clients: text the answer log holds (None:
        the log is unreachable). When it holds none, its writer can log none from now on: one only paused before
        its first append shows nothing of an answer about to fail. Without a log, shown text is saved text."""
        if self.log is None:
            return False
        try:
            return await self.log.close_unwritten(answer.id) > 0
        except LogError as exc:
            logger.warning("answer %s: the answer log is unreachable, its recovery waits: %s", answer.id, exc)
            return None

    def _may_have_been_refused(self, answer: MessageDetail) -> bool:
        """Whether an orphan's client may have been told its chat failed: its gateway never wrote to it, and
        the chat was sent long enough ago for that gateway to have given up on it (3/4 of TURN_SETTLE_SECONDS,
        against its own clock and persistence's: the quarter is for their difference). Counted from when the turn
        was first sent (``sent_at``), not stored: a retry of it stored just before its gateway gave up is no newer
        a chat. Before that, the orphan is resumed as any other: its gateway, if it is still settling the turn,
        then finds it generated here."""
        if answer.version != 1 or answer.content:
            return False
        return datetime.now(UTC) - answer.sent_at > timedelta(seconds=0.75 * self.settings.turn_settle_seconds)

    async def run(self) -> None:
        """Scan every RECOVERY_INTERVAL_SECONDS, for as long as the gateway runs."""
        while True:
            try:
                if (count := await self.scan_once()) > 0:
                    logger.info("recovered %d orphaned answer(s)", count)
            except Exception as exc:  # keep scanning: persistence may be restarting
                logger.warning("recovery scan failed: %s", exc)
            await asyncio.sleep(self.settings.recovery_interval_seconds)
