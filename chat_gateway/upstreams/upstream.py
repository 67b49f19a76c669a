"""One upstream as the gateway holds it: its client, the models it serves, how it continues an answer, its
breaker, its limit, and how it has been doing (for /health/ready and /metrics)."""

import logging
from dataclasses import dataclass, field
from typing import Any

import openai
from openai import AsyncOpenAI
from pydantic import BaseModel

from chat_gateway.config import ContinuationMethod
from chat_gateway.metrics import UPSTREAM_IN_USE, UPSTREAM_LATENCY, UPSTREAM_REQUESTS, UPSTREAM_STATE
from chat_gateway.upstreams.breaker import Breaker, BreakerState
from chat_gateway.upstreams.config import UpstreamConfig
from chat_gateway.upstreams.limits import Limit
from shared import JSONObject

logger = logging.getLogger(__name__)

# A list request waits this long at most: a client listing models should not hang on a slow upstream.
LIST_TIMEOUT_SECONDS = 5.0
# How much each new request weighs in the moving latency and error rate (about the last 20).
WEIGHT = 0.05


class UpstreamHealth(BaseModel):
    """An upstream's state as /health/ready reports it."""

    name: str
    state: BreakerState
    latency_seconds: float | None  # a moving average of the time to a stream's headers
    error_rate: float  # a moving average of the share of requests that failed
    streams: int
    waiting: int


@dataclass(eq=False)  # one object per upstream: compared by identity
class Upstream:
    config: UpstreamConfig
    client: AsyncOpenAI
    continuation: ContinuationMethod = "restart"
    listed: list[JSONObject] = field(default_factory=list)  # what its /v1/models said, when asked
    breaker: Breaker = field(init=False)
    limit: Limit = field(init=False)
    latency: float | None = None
    error_rate: float = 0.0

    def __post_init__(self) -> None:
        config = self.config
        self.breaker = Breaker(config.failure_threshold, config.cooldown_seconds)
        self.limit = Limit(config.name, config.max_concurrency, config.max_queue, config.queue_seconds)
        # Each metric's series of this upstream, looked up once; listed from the start, before any request.
        self._breaker_open = UPSTREAM_STATE.labels(self.name)
        self._ok, self._errors = UPSTREAM_REQUESTS.labels(self.name, "ok"), UPSTREAM_REQUESTS.labels(self.name, "error")
        self._latency = UPSTREAM_LATENCY.labels(self.name)
        self._streams = UPSTREAM_IN_USE.labels(self.name)
        self._breaker_open.set(0)
        self._streams.set(0)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def serves_any(self) -> bool:
        return self.config.models == "any"

    def model_ids(self) -> list[str]:
        if isinstance(self.config.models, list):
            return list(self.config.models)
        return [str(model["id"]) for model in self.listed]

    def catalog(self) -> list[JSONObject]:
        """Its models in OpenAI's shape: as it lists them, else owned by this upstream."""
        if self.listed:
            return self.listed
        return [{"id": model, "object": "model", "created": 0, "owned_by": self.name} for model in self.model_ids()]

    async def discover(self) -> None:
        """Ask its /v1/models (for ``discover`` and ``any``); kept as it was when it does not answer."""
        if isinstance(self.config.models, list):
            return
        try:
            page: Any = await self.client.get("/models", cast_to=object, options={"timeout": LIST_TIMEOUT_SECONDS})
        except (openai.APIError, openai.APIConnectionError) as exc:
            logger.info("upstream %s lists no models (%s)", self.name, exc.__class__.__name__)
            return
        data = page.get("data") if isinstance(page, dict) else None
        self.listed = [model for model in data or [] if isinstance(model, dict) and isinstance(model.get("id"), str)]

    def opened(self, seconds: float) -> None:
        """A stream's request answered with its headers, after ``seconds``: not yet a success (``succeeded``)."""
        self.latency = seconds if self.latency is None else self.latency + WEIGHT * (seconds - self.latency)
        self._latency.observe(seconds)

    def succeeded(self) -> None:
        """A stream finished."""
        self.breaker.succeeded()
        self.error_rate -= WEIGHT * self.error_rate
        self._ok.inc()
        self._breaker_open.set(0)

    def undecided(self) -> None:
        """A stream ended neither finished nor failed by the upstream (its answer cancelled, or refused): no verdict,
        but a probe left so lets the next request probe at once, which the gauge says."""
        self.breaker.undecided()
        self._breaker_open.set(int(self.breaker.skips()))

    def failed(self) -> None:
        """A stream's request failed, or the stream broke off before its end, as a passing failure of the upstream
        would."""
        self.breaker.failed()
        self.error_rate += WEIGHT * (1 - self.error_rate)
        self._errors.inc()
        self._breaker_open.set(int(self.breaker.state == BreakerState.OPEN))

    def streams_changed(self) -> None:
        self._streams.set(self.limit.in_use)

    def health(self) -> UpstreamHealth:
        return UpstreamHealth(
            name=self.name,
            state=self.breaker.state,
            latency_seconds=self.latency,
            error_rate=round(self.error_rate, 4),
            streams=self.limit.in_use,
            waiting=self.limit.waiting,
        )
