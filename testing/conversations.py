"""What a fake upstream reads in the messages it is sent: the question, and the partial answer it is asked to
continue (a trailing assistant message) with the words it is asked to begin with."""

import re
from typing import Any

Messages = list[dict[str, Any]]


def question(messages: Messages) -> str:
    """The last user message's text."""
    return next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")


def partial_answer(messages: Messages) -> str | None:
    """The answer to continue (a trailing assistant message's text), or None: a new answer."""
    if not messages or messages[-1].get("role") != "assistant":
        return None
    return str(messages[-1].get("content") or "")


def anchor(messages: Messages) -> str | None:
    """The words the message before a partial answer asks the continuation to begin with (``[[...]]``, as the
    gateway's ``restart`` continuation asks a model that starts a new message), or None."""
    if len(messages) < 2:
        return None
    asked = re.search(r"\[\[(.*)\]\]", str(messages[-2].get("content")), re.DOTALL)
    return asked.group(1) if asked else None
