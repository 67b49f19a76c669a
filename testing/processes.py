"""A service in a process of its own, as users run it, on a loopback port: started, awaited until it answers,
signalled, paused, killed and started again by its process id."""

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from signal import SIGCONT, SIGKILL, SIGTERM
from typing import Self

import httpx

from testing.ports import free_port

# As the Procfile and the images run both services: the request head bounded while it arrives (shared/server.py).
SERVE_ARGS = ("--http", "shared.server:HttpToolsProtocol")


class Service:
    """``command``, listening on ``port``, ready once GET ``ready`` answers without a server error. Its output
    goes to ``log`` (else to this process's), its environment is ``env`` (else this process's)."""

    def __init__(
        self,
        command: list[str],
        port: int,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        *,
        name: str | None = None,
        ready: str = "/health",
        timeout: float = 30,
    ) -> None:
        self.command = command
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = dict(os.environ if env is None else env)
        self.log = log
        self.name = name or command[0]
        self.ready = ready
        self.timeout = timeout
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def uvicorn(
        cls,
        app: str,
        env: Mapping[str, str],
        log: Path,
        *args: str,
        name: str | None = None,
        as_deployed: bool = True,
        timeout: float = 30,
    ) -> "Service":
        """The app factory ``app`` served by uvicorn on a free port, with uvicorn's ``args``; ``as_deployed``:
        with the HTTP protocol the Procfile and the images serve it with."""
        port = free_port()
        command = [sys.executable, "-m", "uvicorn", app, "--factory", "--port", str(port)]
        command += [*(SERVE_ARGS if as_deployed else ()), *args]
        return cls(command, port, env, log, name=name or app, timeout=timeout)

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    def start(self) -> Self:
        if self.log is None:
            self.process = subprocess.Popen(self.command, env=self.env)
        else:
            with self.log.open("ab") as log:
                self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                if httpx.get(f"{self.url}{self.ready}", timeout=1).status_code < 500:
                    return self
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()  # one that never answered would otherwise outlive the run, holding its port
                raise RuntimeError(f"{self.name} did not start:\n{self.output()[-3000:]}")
            time.sleep(0.05)

    def output(self) -> str:
        """What it has written to its log so far (nothing without one)."""
        return self.log.read_text(errors="replace") if self.log is not None else ""

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def kill(self, sig: int = SIGKILL) -> None:
        """``sig`` (SIGKILL unless told), then wait for the process to end."""
        self.signal(sig)
        if self.process is not None:
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, paused or not (a paused process cannot act on it), and SIGKILL if it does not end in 30 s."""
        self.signal(SIGCONT)
        self.signal(SIGTERM)
        if self.process is not None:
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
