"""The answer log: where an answer's text is made durable before any client is shown it.

Persistence receives an answer's text in batches (once a second, or every ``FLUSH_BYTES``): a gateway that
dies loses what it received since, and a model that samples writes other words there when the answer is
continued. So nothing reaches a client before it is durable somewhere another gateway can read it:

| ``ANSWER_LOG_URL`` | where text is durable before it is shown | writes to persistence |
| --- | --- | --- |
| a Redis URL | this log: an append per chunk, or per few when they come fast | in batches, as before |
| unset | persistence: an append as soon as the one before returned | one per chunk at a steady rate |

The gateway that takes an answer over (``take``) starts from the longer of the log's text and persistence's,
which are both the start of the text the dead gateway generated, and becomes the log's only writer: the log
refuses an append from any other owner. When the log is unreachable, a generation goes on with persistence as
its durable store (``Generation``): slower, never less safe.
"""

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import cast

import redis.asyncio as redis
from redis.exceptions import RedisError

from chat_gateway.answers.text import AnswerText
from chat_gateway.clients import retry
from chat_gateway.config import Settings

logger = logging.getLogger(__name__)

# An append: only by the answer's owner, only at the end of the logged text. Both keys share a hash tag, so a
# Redis Cluster keeps them on one node.
_APPEND = """
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then return -1 end
if redis.call('STRLEN', KEYS[1]) ~= tonumber(ARGV[2]) then return -2 end
local length = redis.call('APPEND', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if owner then redis.call('PEXPIRE', KEYS[2], ARGV[4]) else redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[4]) end
return length
"""

# A takeover: the longer of the logged text and the stored one (each the start of the other, or the log is
# stale and the stored text wins), and the log's owner from now on.
_TAKE = """
local logged = redis.call('GET', KEYS[1]) or ''
local stored = ARGV[2]
local text = stored
if #logged > #stored and string.sub(logged, 1, #stored) == stored then text = logged end
redis.call('SET', KEYS[1], text, 'PX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
return text
"""

# An answer's end: its text goes, and its owner becomes ``ENDED``, which no writer's owner is (theirs are
# ``instance:version``). Deleting the owner too would let a writer that lost the answer without knowing it yet (its
# process paused after it relayed text, before its append reached the log) start the log again at offset 0, with
# text that is not the answer's: its clients would be shown it. It is refused instead, as a takeover's owner refuses
# it; a takeover (``_TAKE``, the answer resumed) sets an owner of its own over it.
_FORGET = """
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 0
"""

# An answer about to fail as never begun (crash recovery): its logged length, and when nothing is logged and no
# one has written it, its owner becomes ``ENDED`` first, as above: its writer, if only paused before its first
# append, is refused it, so its clients are shown nothing of an answer stored as failed.
_CLOSE_UNWRITTEN = """
local length = redis.call('STRLEN', KEYS[1])
if length == 0 and not redis.call('GET', KEYS[2]) then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2]) end
return length
"""

ENDED = "ended"


def log_owner(instance_id: str, version: int) -> str:
    """The log's owner for a claim of an answer: one per claim, since a claim moves the answer's version on, even by
    a gateway restarted under the same INSTANCE_ID."""
    return f"{instance_id}:{version}"


LogError = RedisError  # the log unreachable, or an error of its own: the generation goes on without it


class LogFenced(Exception):
    """The log refused an append: another gateway took the answer over, or the text logged is not ours."""


class AnswerLog:
    """Answers' texts in Redis, keyed by answer, each written by one owner at a time (``owner``: a claim's
    token, see ``Generation``). Kept for ``ttl_seconds`` after the last append, then forgotten: by then the
    answer is saved, or its recovery has long since taken the text."""

    def __init__(self, client: "redis.Redis", ttl_seconds: float = 86_400) -> None:
        self.client = client
        self._ttl_ms = str(int(ttl_seconds * 1000))
        self._append = client.register_script(_APPEND)
        self._take = client.register_script(_TAKE)
        self._forget = client.register_script(_FORGET)
        self._close_unwritten = client.register_script(_CLOSE_UNWRITTEN)

    @staticmethod
    def _keys(message_id: uuid.UUID) -> list[str]:
        tag = "{" + message_id.hex + "}"
        return [f"answer-log:{tag}:text", f"answer-log:{tag}:owner"]

    async def append(self, message_id: uuid.UUID, owner: str, logged_bytes: int, text: str) -> int:
        """Add ``text`` after the ``logged_bytes`` (UTF-8) this owner logged; returns the bytes logged now."""
        length = cast(int, await self._append(self._keys(message_id), [owner, logged_bytes, text, self._ttl_ms]))
        if length < 0:
            raise LogFenced("taken over" if length == -1 else "the logged text is not this gateway's")
        return length

    async def take(self, message_id: uuid.UUID, owner: str, stored: str) -> str:
        """Become the answer's writer; returns the text to go on from (``stored``, or the longer text logged)."""
        text = await self._take(self._keys(message_id), [owner, stored, self._ttl_ms])
        return text.decode() if isinstance(text, bytes) else str(text)

    async def logged_length(self, message_id: uuid.UUID) -> int:
        """How many bytes of the answer are logged (0: none, or forgotten)."""
        return int(await self.client.strlen(self._keys(message_id)[0]))

    async def close_unwritten(self, message_id: uuid.UUID) -> int:
        """How many bytes of the answer are logged; when none, no writer may log any from now on, until a takeover
        (``_CLOSE_UNWRITTEN``)."""
        return int(await self._close_unwritten(self._keys(message_id), [ENDED, self._ttl_ms]))

    async def forget(self, message_id: uuid.UUID) -> None:
        """The answer ended and persistence holds all of it: its text goes, and its owner stays ``ENDED`` (for the
        log's TTL), so that no writer that lost the answer logs text for it again (``_FORGET``)."""
        await self._forget(self._keys(message_id), [ENDED, self._ttl_ms])

    async def close(self) -> None:
        await self.client.aclose()


class LogWriter:
    """Appends what is new in ``buffer`` to the log, one append at a time: text that arrives while an append is
    on its way goes in the next, so a fast upstream costs fewer appends than chunks.

    ``on_fenced``: the log refused an append (the answer was taken over). ``on_unreachable``: an append failed;
    the writer stops, and the generation makes its text durable in persistence instead.
    """

    def __init__(
        self,
        log: AnswerLog,
        message_id: uuid.UUID,
        owner: str,
        buffer: AnswerText,
        *,
        on_fenced: Callable[[], None],
        on_unreachable: Callable[[], None],
    ) -> None:
        self.log = log
        self.message_id = message_id
        self.owner = owner
        self.buffer = buffer
        self._on_fenced = on_fenced
        self._on_unreachable = on_unreachable
        self._bytes = len(buffer.text[: buffer.logged].encode())  # the log's length, in its own unit
        self._wake = asyncio.Event()
        self._closing = False
        self.working = True  # until an append fails

    def wake(self) -> None:
        self._wake.set()

    def restart_at(self, text: str) -> None:
        """The log holds ``text`` now (``AnswerLog.take``)."""
        self._bytes = len(text.encode())

    def logged_ahead(self, text: str) -> None:
        """Add ``text``, which the log holds already (``Opening``), to the empty buffer."""
        self.buffer.add(text)
        self.restart_at(text)
        self.buffer.mark_logged(len(text))

    async def take(self, stored: str, settings: Settings) -> str | None:
        """A claimed answer: become its writer, and return the text to go on from (the log may hold more of it
        than persistence: its gateway showed it and died before saving it); None when the log is unreachable."""
        try:
            take = retry.answer_log(settings)
            text: str = await take(self.log.take, self.message_id, self.owner, stored)
        except LogError as exc:
            # Its clients may have been shown text that only the log holds: said, and gone on without it.
            logger.error(
                "answer %s: the answer log is unreachable, continued from the saved text: %s", self.message_id, exc
            )
            self.working = False
            return None
        if len(text) > len(stored):
            logger.info("answer %s: %d characters taken from the answer log", self.message_id, len(text) - len(stored))
        self.restart_at(text)
        return text

    async def forget(self) -> None:
        """Ended, and all of it stored: the log's copy is no longer needed."""
        try:
            await self.log.forget(self.message_id)
        except LogError as exc:  # it expires on its own
            logger.info("answer %s: its log not forgotten: %s", self.message_id, exc)

    def close(self) -> None:
        """Stop after the append in flight, if any."""
        self._closing = True
        self._wake.set()

    async def run(self) -> None:
        while self.working:
            await self._wake.wait()
            self._wake.clear()
            if self._closing:
                return
            while self.working and self.buffer.logged < len(self.buffer.text):
                end = len(self.buffer.text)
                await self._append(end)

    async def _append(self, end: int) -> None:
        text = self.buffer.text[self.buffer.logged : end]
        try:
            self._bytes = await self.log.append(self.message_id, self.owner, self._bytes, text)
        except LogFenced as exc:
            logger.warning("answer %s: the answer log refused an append (%s)", self.message_id, exc)
            self.working = False
            self._on_fenced()
            return
        except (LogError, OSError) as exc:
            logger.warning(
                "answer %s: answer log unreachable, text made durable in persistence: %s", self.message_id, exc
            )
            self.working = False
            self._on_unreachable()
            return
        self.buffer.mark_logged(end)


def connect(url: str, timeout_seconds: float) -> AnswerLog:
    """The log at ``url`` (no connection is made before the first command)."""
    client = redis.Redis.from_url(url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds)
    return AnswerLog(client)
