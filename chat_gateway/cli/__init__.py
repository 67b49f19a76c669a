"""`chat`: a terminal client of the gateway (also `python -m chat_gateway.cli`).

An answer is followed to its end whatever happens to the connection: dropped, or the gateway restarted, the
client reconnects and goes on from the last offset it showed (SSE Last-Event-ID), for ``--reconnect-for``
seconds. Ctrl-C while an answer streams stops the display, not the answer: `chat resume ID` shows the rest.
"""

from chat_gateway.cli.commands import main

__all__ = ["main"]
