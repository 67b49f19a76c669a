"""Section 4 of the gateway benchmark: what a gateway writes to persistence, counted by a proxy in front of it."""

import asyncio
from contextlib import ExitStack
from dataclasses import dataclass

from bench.clients import streams
from bench.processes import CHUNKS, gateway
from testing.processes import Service


class CountingProxy:
    """A TCP proxy in front of persistence that counts the HTTP requests and bytes sent to it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.requests: dict[str, int] = {}
        self.wire_bytes = 0
        self.body_bytes = 0

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _connection(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        responses = asyncio.ensure_future(self._pipe(reader, client_writer))
        try:
            await self._requests(client_reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the gateway closed the connection
        finally:
            writer.close()  # ends the responses' pipe too
            await asyncio.gather(responses, return_exceptions=True)
            client_writer.close()

    async def _requests(self, source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
        # HTTP/1.1 requests one after another: a head, then Content-Length bytes of body.
        while head := await source.readuntil(b"\r\n\r\n"):
            lines = head.decode("latin-1").split("\r\n")
            method = lines[0].split(" ", 1)[0]
            length = next((int(h.split(":", 1)[1]) for h in lines if h.lower().startswith("content-length:")), 0)
            body = await source.readexactly(length)
            self.requests[method] = self.requests.get(method, 0) + 1
            self.wire_bytes += len(head) + length
            self.body_bytes += length
            target.write(head + body)
            await target.drain()

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            target.write(data)
            await target.drain()
        target.close()


@dataclass
class Amplification:
    configuration: str  # "answer log" or "no log"
    upstream: str  # "unpaced" or "50 tokens/s"
    answers: int
    tokens: int
    answer_bytes: int
    requests: dict[str, int]
    writes_per_1000_tokens: float
    body_bytes_per_answer_byte: float
    wire_bytes_per_answer_byte: float


def amplification(
    tmp: str,
    persistence: Service,
    upstream_url: str,
    answers: int,
    answer_log: str | None = None,
    code: str | None = None,
    paced: bool = False,
) -> Amplification:
    """Writes to persistence for ``answers`` answers at once through a gateway of their own (with the answer log
    at ``answer_log``, from the tree ``code``), counted by a proxy in front of persistence."""

    async def run() -> Amplification:
        proxy = CountingProxy(persistence.port)
        proxy_url = await proxy.start()
        with ExitStack() as stack:
            # Started from a thread: the proxy must keep serving while the gateway starts.
            started = gateway(tmp, proxy_url, upstream_url, answer_log, code)
            service = await asyncio.to_thread(stack.enter_context, started)
            proxy.requests.clear()
            proxy.wire_bytes = proxy.body_bytes = 0
            done = await streams(service.url, answers, answers)
            await asyncio.sleep(0.5)  # the final writes after the last chunk was relayed
            counted = dict(proxy.requests), proxy.wire_bytes, proxy.body_bytes
            await asyncio.to_thread(stack.close)
        proxy.server.close()
        requests, wire_bytes, body_bytes = counted
        writes = sum(n for method, n in requests.items() if method in ("POST", "PATCH", "PUT", "DELETE"))
        tokens = len(done) * CHUNKS
        answer_bytes = sum(len(s.text.encode()) for s in done)
        return Amplification(
            "no log" if answer_log is None else "answer log",
            "50 tokens/s" if paced else "unpaced",
            answers,
            tokens,
            answer_bytes,
            requests,
            writes / tokens * 1000,
            body_bytes / answer_bytes,
            wire_bytes / answer_bytes,
        )

    return asyncio.run(run())
