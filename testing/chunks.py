"""How the fake upstreams stream: OpenAI's ``chat.completion.chunk`` events, a token or a tool call's fragment
each, then the finish and ``[DONE]``."""

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

DONE = b"data: [DONE]\n\n"


class Dropped(Exception):
    """Raised mid-stream: uvicorn then closes the connection, as a failing upstream does."""


def tokens(text: str) -> list[str]:
    """How a fake sends a text: a word and the spaces after it per chunk."""
    return re.findall(r"\S+\s*|\s+", text)


@dataclass(frozen=True)
class Chunks:
    """One fake's chunks: its ``id`` and ``model`` in each, ``created`` fixed (else the time of sending), and
    ``compact`` JSON (no spaces after its separators) or Python's default."""

    id: str
    model: str
    created: int | None = None
    compact: bool = False
    # Text chunks already encoded, when ``created`` is fixed: a fake as cheap per chunk as the benchmarks need.
    _encoded: dict[tuple[str | None, str | None], bytes] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def event(self, body: dict[str, Any]) -> bytes:
        separators = (",", ":") if self.compact else None
        return f"data: {json.dumps(body, separators=separators)}\n\n".encode()

    def _body(self, choices: list[dict[str, Any]], created: int | None) -> dict[str, Any]:
        when = created if created is not None else int(time.time())
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": when,
            "model": self.model,
            "choices": choices,
        }

    def delta(
        self,
        content: str | None,
        finish_reason: str | None = None,
        call: dict[str, Any] | None = None,
        logprobs: bool = False,
    ) -> bytes:
        """A chunk of text (``content``), of a tool call (``call``: a ``delta.tool_calls`` item) or, with
        neither, the finish; ``logprobs``: with each text token's (a made-up one)."""
        if self.created is not None and call is None and not logprobs:
            key = (content, finish_reason)
            if (encoded := self._encoded.get(key)) is None:
                encoded = self._encoded[key] = self._delta(content, finish_reason, None, False)
            return encoded
        return self._delta(content, finish_reason, call, logprobs)

    def _delta(
        self, content: str | None, finish_reason: str | None, call: dict[str, Any] | None, logprobs: bool
    ) -> bytes:
        delta: dict[str, Any] = {"content": content} if content is not None else {}
        if call is not None:
            delta = {"tool_calls": [call]}
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        if logprobs and content:
            token = {"token": content, "logprob": -0.5, "bytes": list(content.encode()), "top_logprobs": []}
            choice["logprobs"] = {"content": [token], "refusal": None}
        return self.event(self._body([choice], self.created))

    def usage(self, prompt: int, completion: int) -> bytes:
        """The last chunk of a stream asked to include usage: no choices."""
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        return self.event(self._body([], 0) | {"usage": usage})
