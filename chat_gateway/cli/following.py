"""Following an answer to its end through dropped connections and gateway restarts (SSE Last-Event-ID)."""

import argparse
import json
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import httpx
from httpx_sse import EventSource, connect_sse

from chat_gateway.cli.display import make_display

STOPPED = "[display stopped; the answer goes on: `chat resume {message}` shows the rest]"
GAVE_UP = (
    "[the gateway has been unreachable for {seconds:g} s; the answer may go on: `chat resume {message}` follows it]"
)
FAILED = "[answer failed: {error}; `chat resume {message}` continues it]"
# Answers the gateway may give while it restarts or behind a proxy: worth another try, unlike a 4xx.
TRANSIENT = frozenset({502, 503, 504})
RETRY_WAITS = (0.1, 0.25, 0.5, 1.0, 2.0)


class ApiError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status


class Gateway(httpx.Client):
    """The gateway's client; it remembers whether the gateway has answered at all in this run."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(event_hooks={"response": [self._answered]}, **kwargs)
        self.reached = False

    def _answered(self, response: httpx.Response) -> None:
        self.reached = True


class GaveUp(Exception):
    """The gateway stayed unreachable for longer than ``--reconnect-for``."""


def check(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    response.read()
    try:
        body = response.json()
        detail = body.get("detail") or body.get("error", {}).get("message") or response.text
    except ValueError:
        detail = response.text
    raise ApiError(response.status_code, detail)


@dataclass
class Answer:
    """An answer being followed: its ids once known, and the offset of the last event shown."""

    message_id: str | None = None
    session_id: str | None = None
    seen: str = "0"
    tool_calls: list[str] = field(default_factory=list)


Opener = Callable[[], AbstractContextManager[EventSource]]


class Follow:
    """Shows an answer from a first request (a question, a resume, an attach) to the answer's end, through
    dropped connections and gateway restarts; a question is sent again under its Idempotency-Key until its
    answer's id is known, after which the answer is followed from the last offset shown."""

    def __init__(self, http: httpx.Client, args: argparse.Namespace, answer: Answer | None = None) -> None:
        self.http = http
        self.reconnect_for: float = args.reconnect_for
        self.answer = answer or Answer()
        self.display = make_display()
        self.interrupted = False

    def _reattach(self) -> AbstractContextManager[EventSource]:
        path = f"/chat/messages/{self.answer.message_id}/stream"
        return connect_sse(self.http, "GET", path, headers={"last-event-id": self.answer.seen})

    def _events(self, source: EventSource) -> Iterator[tuple[str, dict[str, Any]]]:
        for event in source.iter_sse():
            if event.event == "ping" or not event.data:
                continue
            yield event.event, json.loads(event.data)
            if event.id:
                self.answer.seen = event.id

    def run(self, first: Opener) -> bool:
        """True when the answer was shown to its end; False when it failed, or Ctrl-C stopped the display."""
        previous = signal.signal(signal.SIGINT, self._interrupt)
        try:
            return self._run(first)
        except KeyboardInterrupt:
            self.display.close()
            self.display.notice(STOPPED.format(message=self.answer.message_id or "ID"))
            return False
        finally:
            signal.signal(signal.SIGINT, previous)
            self.display.close()

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        # Noted as well as raised: closing a connection interrupted mid-read may raise an error of its own, which
        # would replace the KeyboardInterrupt and read as a dropped connection to reconnect through.
        self.interrupted = True
        raise KeyboardInterrupt

    def _run(self, first: Opener) -> bool:
        opener, down_since, attempt = first, None, 0
        while True:
            try:
                with opener() as source:
                    check(source.response)
                    self.display.waiting(None)
                    for kind, data in self._events(source):
                        if (ended := self._show(kind, data)) is not None:
                            return ended
                        if kind != "start":  # the answer moves on: a new outage starts the clock anew
                            down_since, attempt = None, 0
            except ApiError as exc:
                if exc.status not in TRANSIENT or self.answer.message_id is None:
                    raise
            except httpx.TransportError:
                if self.answer.message_id is None and not (isinstance(self.http, Gateway) and self.http.reached):
                    raise  # never reached: a wrong URL, or no gateway running, is said at once
            if self.interrupted:
                raise KeyboardInterrupt
            # Dropped, or the gateway lost track of the answer (an error without status): it may well go on.
            if self.answer.message_id is not None:
                opener = self._reattach
            down_since = down_since or time.monotonic()
            if time.monotonic() - down_since > self.reconnect_for:
                raise GaveUp(GAVE_UP.format(seconds=self.reconnect_for, message=self.answer.message_id or "ID"))
            self.display.waiting("reconnecting…")
            time.sleep(RETRY_WAITS[min(attempt, len(RETRY_WAITS) - 1)])
            attempt += 1

    def _show(self, kind: str, data: dict[str, Any]) -> bool | None:
        """Show one event: True or False once the answer has ended (well or not), None while it goes on."""
        if kind == "start":
            self.answer.message_id, self.answer.session_id = data["message_id"], data["session_id"]
        elif kind == "delta":
            self.display.text(data["text"])
        elif kind == "tool_call":
            function = data.get("function") or {}
            self.answer.tool_calls.append(f"[tool call: {function.get('name')}({function.get('arguments')})]")
        elif kind == "done":
            self.display.close()
            for call in self.answer.tool_calls:
                self.display.notice(call)
            if data.get("finish_reason") == "length":
                self.display.notice("[the answer reached its length limit]")
            return True
        elif kind == "error" and data.get("status") is not None:
            self.display.close()
            if data["status"] == "failed":
                self.display.notice(FAILED.format(error=data["error"], message=self.answer.message_id))
                return False
            self.display.notice(f"[{data['error']}]")
            return True
        elif kind == "error":
            raise httpx.RemoteProtocolError(data.get("error") or "the gateway lost track of the answer")
        return None
