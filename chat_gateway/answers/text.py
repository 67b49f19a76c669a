"""The text of an answer this gateway generates, and how much of it is where: one buffer that the generation
fills, the writers (persistence's, the answer log's) mark as they save it, and listeners read.

A listener is given ``text[:durable]`` and nothing past it: text that persistence or the answer log holds,
which whoever continues the answer goes on from. What a client was shown is therefore always the start of
the answer as it will be stored, however the gateway that showed it ends.
"""

import asyncio
import contextlib


class AnswerText:
    def __init__(self, content: str) -> None:
        self.text = content  # everything generated so far, durable or not
        self.saved = len(content)  # persistence holds text[:saved]
        self.logged = 0  # the answer log holds text[:logged]
        self._changed: asyncio.Future[None] | None = None

    @property
    def durable(self) -> int:
        """How much of the text may be shown: what persistence or the answer log holds."""
        return max(self.saved, self.logged)

    def add(self, text: str) -> None:
        self.text += text

    def mark_saved(self, length: int) -> None:
        self._advance(length, self.logged)

    def mark_logged(self, length: int) -> None:
        self._advance(self.saved, length)

    def restart_from(self, text: str, logged: int) -> None:
        """Go on from ``text`` (a takeover's, longer than what persistence returned), ``logged`` of it logged."""
        self.text, self.logged = text, logged
        self.notify()

    def _advance(self, saved: int, logged: int) -> None:
        durable = self.durable
        self.saved, self.logged = saved, logged
        if self.durable > durable:
            self.notify()

    def notify(self) -> None:
        """Wake the listeners: more text is durable, or the answer ended."""
        # The future exists only while someone waits: most changes come before a listener is back to wait.
        changed, self._changed = self._changed, None
        if changed is not None and not changed.done():
            changed.set_result(None)

    async def changed(self) -> None:
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        # Shielded: a listener that goes away must not cancel the future the others wait on.
        await asyncio.shield(self._changed)

    async def changed_within(self, seconds: float) -> None:
        """``changed``, waited for ``seconds`` at most.

        With asyncio.timeout, not asyncio.wait_for: on Python 3.11, wait_for drops a cancel that comes once what it
        waits for is done, and a background response cancelled as its first words were saved went on to its end.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.changed()


async def listeners_ran() -> None:
    """Let the listeners send the text they were given before the caller reads on: a listener wakes two loop
    iterations after ``AnswerText.notify`` (the future's callback, then its task): both are given."""
    for _ in range(2):
        await asyncio.sleep(0)
