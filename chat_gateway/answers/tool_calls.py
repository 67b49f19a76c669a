"""Tool calls as an upstream streams them: fragments gathered into whole calls, kept back until the answer ends.

OpenAI streams a call as deltas keyed by ``index``: the first carries its ``id``, ``type`` and function
``name``, the following ones fragments of its ``arguments``. Parallel calls interleave by index. A call is
whole only when the stream ends with a ``finish_reason``: before that, a drop leaves half a call, which no
client may see nor store. So a generation relays and stores its calls once, with the answer's end, and an
answer interrupted in its calls is asked for again from its saved text (its calls are generated anew).
"""

from dataclasses import dataclass, field
from typing import Any

from shared import storable_text
from shared.contract import MAX_TOOL_CALLS
from shared.resources import TOOL_CALL_ID_MAX_LENGTH, TOOL_NAME_MAX_LENGTH, FunctionCall, ToolCall


@dataclass
class _Call:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class TooManyToolCalls(Exception):
    """More calls than an answer can store: the answer fails saying so (no retry makes the model make fewer)."""


class ToolCallAssembler:
    """The calls of one upstream attempt, from their deltas."""

    def __init__(self) -> None:
        self._calls: dict[int, _Call] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def feed(self, deltas: list[Any]) -> None:
        """Add a chunk's ``delta.tool_calls``; what is not shaped as OpenAI's is ignored."""
        for delta in deltas:
            if not isinstance(delta, dict):
                continue
            index = delta.get("index", len(self._calls))
            if not isinstance(index, int):
                continue
            call = self._calls.setdefault(index, _Call())
            if isinstance(call_id := delta.get("id"), str) and call_id:
                call.id = call_id
            function = delta.get("function")
            if isinstance(function, dict):
                # OpenAI sends a name once, whole; some servers repeat it with every delta, others fragment it.
                if isinstance(name := function.get("name"), str) and name != call.name:
                    call.name += name
                if isinstance(arguments := function.get("arguments"), str):
                    call.arguments.append(arguments)

    def calls(self, prefix: str) -> list[ToolCall]:
        """The whole calls, in index order; one an upstream left without an id gets one from ``prefix``."""
        if len(self._calls) > MAX_TOOL_CALLS:
            raise TooManyToolCalls(f"the model made {len(self._calls)} tool calls; an answer holds {MAX_TOOL_CALLS}")
        whole = []
        for index, call in sorted(self._calls.items()):
            call_id = storable_text(call.id[:TOOL_CALL_ID_MAX_LENGTH]) or f"call_{prefix}_{index}"
            name = storable_text(call.name[:TOOL_NAME_MAX_LENGTH]) or "unnamed"
            arguments = storable_text("".join(call.arguments))
            whole.append(ToolCall(id=call_id, function=FunctionCall(name=name, arguments=arguments)))
        return whole
