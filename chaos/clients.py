"""The chaos run's clients: each chat is one of six kinds, through either gateway, and records what its client
was shown and told, to be checked against what was stored."""

import asyncio
import json
import random
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

KINDS = ("sse", "json_idempotent", "json", "openai_stream", "openai", "responses")
REATTACH = re.compile(r"reattach from (\d+)")


@dataclass
class Chat:
    question: str
    kind: str
    message_id: str | None = None
    seen: str = ""  # the text the client was shown, from the start
    outcome: str = "unknown"  # complete: shown whole; failed: told it failed; unknown: lost touch
    told_failed_at: float | None = None  # when the client was told the chat failed (time.time())
    reattaches: int = 0
    began: float = 0.0  # when the client first asked, and when it stopped (time.time())
    ended: float = 0.0
    notes: list[str] = field(default_factory=list)


async def _sse(response: httpx.Response) -> AsyncIterator[tuple[str, str | None, Any]]:
    """(event, id, data) of a text/event-stream."""
    event, event_id, data = "message", None, list[str]()
    async for line in response.aiter_lines():
        if line == "":
            if data:
                payload = "\n".join(data)
                yield event, event_id, (json.loads(payload) if payload != "[DONE]" else payload)
            event, event_id, data = "message", None, list[str]()
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


class Client:
    def __init__(self, gateways: list[str], chance: random.Random, deadline: float) -> None:
        self.gateways = gateways
        self.chance = chance
        self.deadline = deadline  # time.monotonic() after which a chat stops trying
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=3.0))

    def _gateway(self) -> str:
        return self.chance.choice(self.gateways)

    async def chat(self, chat: Chat) -> Chat:
        chat.began = time.time()
        try:
            await getattr(self, f"_{chat.kind}")(chat)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            chat.notes.append(f"{type(exc).__name__}: {exc}")
        chat.ended = time.time()
        return chat

    def _told_failed(self, chat: Chat, why: str) -> None:
        chat.outcome, chat.told_failed_at = "failed", time.time()
        chat.notes.append(why)

    async def _json(self, chat: Chat) -> None:
        try:
            response = await self.http.post(f"{self._gateway()}/chat", json={"message": chat.question})
        except httpx.TransportError as exc:
            chat.notes.append(f"lost: {exc!r}")
            return
        await self._json_outcome(chat, response)

    async def _json_outcome(self, chat: Chat, response: httpx.Response) -> bool:
        """True when the chat has an outcome the client would not retry."""
        body = response.json()
        chat.message_id = body.get("message_id") or chat.message_id
        if response.status_code == 200:
            chat.seen, chat.outcome = body["response"], "complete"
            return True
        if response.status_code == 502 and body.get("code") == "answer_failed":
            chat.seen = body.get("partial") or ""
            self._told_failed(chat, f"502: {body.get('error')}")
            return True
        if body.get("code") == "outcome_unknown":
            chat.notes.append(f"{response.status_code}: {body.get('detail')}")
            return False
        self._told_failed(chat, f"{response.status_code}: {body.get('detail')}")
        return False

    async def _json_idempotent(self, chat: Chat) -> None:
        headers = {"Idempotency-Key": f"key-{chat.question}"}
        while time.monotonic() < self.deadline:
            try:
                response = await self.http.post(
                    f"{self._gateway()}/chat", json={"message": chat.question}, headers=headers
                )
            except httpx.TransportError as exc:
                chat.notes.append(f"retrying after {exc!r}")
                continue
            if await self._json_outcome(chat, response):
                return
            chat.outcome, chat.told_failed_at = "unknown", None  # retried with the same key: not a failure yet

    async def _sse(self, chat: Chat) -> None:
        url, body = f"{self._gateway()}/chat", {"message": chat.question, "stream": True}
        leave_after = self.chance.randrange(1, 40) if self.chance.random() < 0.4 else None
        request = self.http.build_request("POST", url, json=body)
        while time.monotonic() < self.deadline:
            try:
                if await self._follow(chat, request, leave_after):
                    return
            except httpx.TransportError as exc:
                chat.notes.append(f"reattaching after {exc!r}")
            if chat.message_id is None:
                chat.notes.append("lost before the start event")
                return
            leave_after = None
            chat.reattaches += 1
            stream = f"{self._gateway()}/chat/messages/{chat.message_id}/stream"
            request = self.http.build_request("GET", stream, headers={"Last-Event-ID": str(len(chat.seen))})

    async def _follow(self, chat: Chat, request: httpx.Request, leave_after: int | None) -> bool:
        """One connection's events; True when the chat has its outcome, False to reattach."""
        response = await self.http.send(request, stream=True)
        try:
            if response.status_code != 200:
                await response.aread()
                body = response.json()
                if response.status_code == 409 and body.get("code") == "offset_mismatch":
                    chat.seen = chat.seen[: body["length"]]
                    return False
                if response.status_code >= 500:
                    chat.notes.append(f"{response.status_code}: {body.get('detail')}")
                    return False
                self._told_failed(chat, f"{response.status_code}: {body.get('detail')}")
                return True
            deltas = 0
            async for event, event_id, data in _sse(response):
                if event == "start":
                    chat.message_id = data["message_id"]
                elif event == "delta":
                    chat.seen += data["text"]
                    if event_id is not None and int(event_id) != len(chat.seen):
                        chat.notes.append(f"event id {event_id} after {len(chat.seen)} characters")
                    deltas += 1
                    if leave_after is not None and deltas >= leave_after:
                        return False  # the client goes away mid-answer, and comes back
                elif event == "done":
                    chat.outcome = "complete"
                    return True
                elif event == "error":
                    if (again := REATTACH.search(str(data.get("error")))) is not None:
                        chat.seen = chat.seen[: int(again.group(1))]
                        return False
                    if data.get("status") is None:  # lost track of it: it may go on
                        return False
                    self._told_failed(chat, f"error event: {data.get('error')}")
                    return True
            return False  # the stream broke off
        finally:
            await response.aclose()

    async def _openai(self, chat: Chat) -> None:
        body = {"model": "chaos", "messages": [{"role": "user", "content": chat.question}]}
        try:
            response = await self.http.post(f"{self._gateway()}/v1/chat/completions", json=body)
        except httpx.TransportError as exc:
            chat.notes.append(f"lost: {exc!r}")
            return
        answer = response.json()
        if response.status_code == 200:
            chat.message_id = answer["id"].removeprefix("chatcmpl-")
            chat.seen, chat.outcome = answer["choices"][0]["message"]["content"], "complete"
        elif answer["error"].get("code") == "outcome_unknown":
            chat.notes.append(f"{response.status_code}: {answer['error']}")
        else:
            self._told_failed(chat, f"{response.status_code}: {answer.get('error')}")

    async def _openai_stream(self, chat: Chat) -> None:
        body = {"model": "chaos", "stream": True, "messages": [{"role": "user", "content": chat.question}]}
        try:
            async with self.http.stream("POST", f"{self._gateway()}/v1/chat/completions", json=body) as response:
                if response.status_code != 200:
                    await response.aread()
                    self._told_failed(chat, f"{response.status_code}: {response.json().get('error')}")
                    return
                async for _event, _id, data in _sse(response):
                    if data == "[DONE]":
                        chat.outcome = "complete"
                        return
                    if "error" in data:
                        message = str(data["error"].get("message"))
                        if message.startswith("the answer failed"):
                            self._told_failed(chat, f"error chunk: {message}")
                        else:  # lost track of it (an OpenAI client cannot reattach): it may well go on
                            chat.notes.append(f"error chunk: {message}")
                        return
                    chat.message_id = data["id"].removeprefix("chatcmpl-")
                    for choice in data.get("choices") or []:
                        chat.seen += choice.get("delta", {}).get("content") or ""
        except httpx.TransportError as exc:
            chat.notes.append(f"lost: {exc!r}")

    async def _responses(self, chat: Chat) -> None:
        """A background response, streamed; when the stream breaks, resumed after the last event it had, through
        either gateway. Its events must number on with no gap in the text and no repeat."""
        body = {"model": "chaos", "input": chat.question, "background": True, "stream": True}
        request = self.http.build_request("POST", f"{self._gateway()}/v1/responses", json=body)
        after = -1
        while time.monotonic() < self.deadline:
            try:
                response = await self.http.send(request, stream=True)
                try:
                    if response.status_code != 200:
                        await response.aread()
                        error = response.json().get("error") or {}
                        if chat.message_id is None and response.status_code == 503 and "will not" in str(error):
                            self._told_failed(chat, f"503: {error.get('message')}")
                            return
                        chat.notes.append(f"{response.status_code}: {error.get('message')}")
                    else:
                        async for _event, _id, data in _sse(response):
                            number = data.get("sequence_number", -1)
                            if number <= after and data.get("type") != "error":
                                chat.notes.append(f"event {number} again, after {after}")
                            after = max(after, number)
                            kind = data.get("type")
                            if kind == "response.created":
                                chat.message_id = str(uuid.UUID(hex=data["response"]["id"].removeprefix("resp_")))
                            elif kind == "response.output_text.delta":
                                chat.seen += data["delta"]
                            elif kind == "response.completed":
                                chat.outcome = "complete"
                                return
                            elif kind in ("response.failed", "response.incomplete"):
                                self._told_failed(chat, f"{kind}: {data['response'].get('error')}")
                                return
                finally:
                    await response.aclose()
            except httpx.TransportError as exc:
                chat.notes.append(f"resuming after {exc!r}")
            if chat.message_id is None:
                chat.notes.append("lost before response.created")
                return
            chat.reattaches += 1
            await asyncio.sleep(0.2)
            resumed = f"{self._gateway()}/v1/responses/resp_{uuid.UUID(chat.message_id).hex}"
            params = {"stream": "true", "starting_after": str(after)}
            request = self.http.build_request("GET", resumed, params=params)

    async def close(self) -> None:
        await self.http.aclose()
