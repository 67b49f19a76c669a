"""The upstream stream a new chat opens while its turn is stored, and with an answer log, its first text made
durable meanwhile.

The turn is most of the wait before a chat's first word (docs/benchmarks.md, section 3), and after it came the
first text's fsynced append to the answer log. Both now overlap: the first text is read and appended to the log
under the answer's id (the gateway's own, random: ``chat_ids``) and under the owner its generation will write
under, so once the turn is back that text is durable already and is shown at once. Nothing reads it before then:
the generation that shows it exists only once its turn is stored as this gateway's new answer.

What the log may then hold of an answer whose turn is not this gateway's to generate is forgotten (``discard``:
refused, stored as another answer, not stored), and so is what it holds as soon as the turn's reply is lost
(``withdraw``): crash recovery reads logged text as "may have been shown" (``Recovery._was_shown``), and a gateway
that gives up on such a turn tells its client the chat failed. What remains: a log unreachable at that very
moment keeps the entry (it expires with the log's TTL), and recovery may then generate that chat's answer although
its client was told it failed.
"""

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from typing import Any

from openai import AsyncStream

from chat_gateway.answers.log import AnswerLog, LogError, LogFenced, log_owner
from chat_gateway.clients.upstream import Chunk, read_chunks
from shared.contract import MessageDetail

logger = logging.getLogger(__name__)

# A turn's answer as persistence first stores it (its version column's default, persistence/models.py): the
# version its generation's log owner is made of. tests/chat_gateway/answers/test_opening.py holds the two together.
NEW_ANSWER_VERSION = 1

Opens = Callable[[], Coroutine[Any, Any, AsyncStream[object]]]


class Opening:
    """``opens``'s stream, begun now; with ``log``, its first text read ahead and logged under ``answer_id``."""

    def __init__(self, opens: Opens, log: AnswerLog | None, answer_id: uuid.UUID, instance_id: str) -> None:
        self.log = log
        self.answer_id = answer_id
        self.owner = log_owner(instance_id, NEW_ANSWER_VERSION)
        self.logged = ""  # the first text, as the log holds it (empty: none logged)
        self.withdrawn = False  # given up while the turn was settled: its stream closed, its log entry forgotten
        self._head: list[Chunk] = []  # the chunks read ahead, the last the first with text
        self._chunks: AsyncGenerator[Chunk, None] | None = None
        self._stream: AsyncStream[object] | None = None
        self._appending = False  # an append was sent: the log may hold text for the answer
        self._task = asyncio.create_task(self._open(opens))

    async def _open(self, opens: Opens) -> None:
        self._stream = await opens()
        if self.log is None:
            return
        self._chunks = read_chunks(self._stream)
        async for chunk in self._chunks:
            self._head.append(chunk)
            if chunk.text:
                break
        else:
            return
        self._appending = True
        try:
            await self.log.append(self.answer_id, self.owner, 0, chunk.text)
        except (LogError, LogFenced, OSError) as exc:  # its generation logs it, or makes it durable in persistence
            logger.info("answer %s: its first text not logged ahead: %s", self.answer_id, exc)
            return
        self.logged = chunk.text

    async def chunks(self) -> AsyncIterator[Chunk]:
        """The stream's chunks from its first (the opening's error, if it failed): those read ahead, then the rest."""
        await self._task
        return self._relay()

    async def _relay(self) -> AsyncIterator[Chunk]:
        for chunk in self._head:
            yield chunk
        assert self._stream is not None
        async for chunk in self._chunks if self._chunks is not None else read_chunks(self._stream):
            yield chunk

    async def fits(self, answer: MessageDetail) -> bool:
        """Whether the stored answer may be generated from this opening: not withdrawn, and with a log, stored at the
        version the log's owner was made of (otherwise it is closed, and its generation takes the log over)."""
        if not self.withdrawn and (self.log is None or answer.version == NEW_ANSWER_VERSION):
            return True
        if not self.withdrawn:
            version = answer.version
            logger.error("answer %s stored at version %d, logged ahead at %d", answer.id, version, NEW_ANSWER_VERSION)
        await self.close()
        return False

    async def close(self) -> None:
        """Abandon the stream: cancel its request, or close it."""
        self._task.cancel()
        await asyncio.wait([self._task])
        if not self._task.cancelled():
            self._task.exception()  # a failed opening's error is the generation's to raise, or nobody's: seen
        if self._chunks is not None:
            await self._chunks.aclose()
        elif self._stream is not None:
            await self._stream.close()

    async def discard(self) -> None:
        """Abandon the stream, and forget what the log holds of the answer: it is not this gateway's to generate."""
        await self.close()
        if self._appending and self.log is not None:
            try:
                await self.log.forget(self.answer_id)
            except LogError as exc:  # it expires with the log's TTL (the module's docstring says what remains)
                logger.warning("answer %s: its first text logged ahead not forgotten: %s", self.answer_id, exc)

    async def withdraw(self) -> None:
        """The turn's reply was lost: with a log, the opening is discarded before this gateway may give up on the
        turn; the answer, if it is stored, is generated afresh. Without one, it is kept (nothing was logged)."""
        if self.log is not None:
            await self.discard()
            self.withdrawn = True
