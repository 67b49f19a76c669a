"""Every upstream by name: which serve a model (its ``Route``), the union of their models, their health.

Built from UPSTREAMS_FILE (config.py), or, without one, from the single-upstream settings (OPENAI_API_KEY,
OPENAI_BASE_URL, UPSTREAM_CONTINUATION...) as one upstream named ``default`` that serves whatever model is asked,
as the gateway always did (and without a breaker: it has nowhere else to send a chat).
"""

import asyncio
import logging
from collections.abc import Mapping

import httpx

from chat_gateway.clients.upstream import open_client
from chat_gateway.clients.upstream_probe import choose
from chat_gateway.config import Settings
from chat_gateway.upstreams.config import DEFAULT, ConfigError, UpstreamConfig, UpstreamsConfig, load, unserved
from chat_gateway.upstreams.route import Candidate, Route
from chat_gateway.upstreams.upstream import Upstream, UpstreamHealth
from shared import ErrorCode, JSONObject, NotFound
from shared.contract import MessageDetail

logger = logging.getLogger(__name__)


def single_upstream(settings: Settings) -> UpstreamsConfig | None:
    """The single-upstream settings as an upstreams file would say them; None without a key."""
    if settings.openai_api_key is None:
        return None
    default = UpstreamConfig(
        name=DEFAULT,
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key,
        models="any",
        continuation=settings.upstream_continuation,
        timeout_seconds=settings.upstream_timeout_seconds,
        failure_threshold=None,
    )
    return UpstreamsConfig(upstreams=[default])


class Upstreams:
    def __init__(
        self,
        upstreams: list[Upstream],
        default_model: str,
        aliases: Mapping[str, str] | None = None,
        fallbacks: Mapping[str, list[str]] | None = None,
    ) -> None:
        self.by_name = {upstream.name: upstream for upstream in upstreams}
        self.default_model = default_model
        self.aliases = dict(aliases or {})
        self.fallbacks = dict(fallbacks or {})

    @classmethod
    def build(cls, settings: Settings) -> "Upstreams":
        """From UPSTREAMS_FILE, else the single-upstream settings (no upstream without a key): clients made,
        nothing asked yet (``start``). Raises ``ConfigError`` for a file that cannot be used."""
        config = load(settings.upstreams_file) if settings.upstreams_file is not None else single_upstream(settings)
        if config is None:
            return cls([], settings.openai_model)
        upstreams = [
            Upstream(upstream, open_client(upstream.key(), upstream.base_url, upstream.timeout_seconds))
            for upstream in config.upstreams
        ]
        return cls(upstreams, settings.openai_model, config.aliases, config.fallbacks)

    @property
    def configured(self) -> bool:
        return bool(self.by_name)

    async def start(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        """Ask each upstream, at once, how it continues an answer (where not configured) and which models it
        serves (where the file says ``discover``)."""
        await asyncio.gather(*(self._start(upstream, settings, transport) for upstream in self.by_name.values()))
        self._check_served()

    def _check_served(self) -> None:
        """Raise ``ConfigError`` for an alias or fallback naming a model no upstream serves, once every upstream
        that discovers its models has listed them (the file's listed models were checked as it was read); while
        one has not answered, what it serves is unknown: said, and the entry goes nowhere while nothing serves it."""
        upstreams = list(self.by_name.values())
        if any(upstream.serves_any for upstream in upstreams):
            return
        served = {model for upstream in upstreams for model in upstream.model_ids()}
        silent = [u.name for u in upstreams if u.config.models == "discover" and not u.listed]
        for (table, key), model in unserved(self.aliases, self.fallbacks, served):
            entry = f"{table}: {key!r} names {model!r}, which no upstream serves"
            if silent:
                logger.warning("%s (yet: %s listed no models): it is skipped", entry, ", ".join(silent))
                continue
            problem = f"{entry} (they serve: {', '.join(sorted(served)) or 'none'})"
            logger.critical("UPSTREAMS_FILE: %s", problem)  # uvicorn's start-up failure shows only a traceback
            raise ConfigError(problem)

    async def _start(self, upstream: Upstream, settings: Settings, transport: httpx.AsyncBaseTransport | None) -> None:
        config = upstream.config
        key = config.key()
        choice = await choose(
            config.continuation, config.base_url, key, settings.upstream_probe_seconds, transport, upstream.name
        )
        upstream.continuation = choice.method
        if config.models == "discover":
            await upstream.discover()

    def route(self, model: str | None, *, stored: bool = False) -> Route:
        """The candidates for ``model`` (an alias, or None: the default), in order; 404 when none serves it.

        ``stored``: the model of an answer being continued, which no upstream may serve any more (or the name an
        upstream answered with): then the default model's, rather than never."""
        if stored and model is not None and not self._serving(self.aliases.get(model, model)):
            logger.warning("no upstream serves the model %r any more: the default model continues it", model)
            model = None
        asked = model or self.default_model
        model = self.aliases.get(asked, asked)
        candidates = self._serving(model)
        for fallback in self.fallbacks.get(model, ()):
            candidates += [c for c in self._serving(fallback) if c not in candidates]
        if not candidates:
            known = ", ".join(sorted({*self._known(), *self.aliases}))
            raise NotFound(
                f"The model {asked!r} does not exist. The models are: {known or 'none'}",
                code=ErrorCode.MODEL_NOT_FOUND,
            )
        return Route(model, candidates)

    def serves(self, model: str) -> bool:
        return bool(self._serving(self.aliases.get(model, model)))

    def resumed_on(self, answer: MessageDetail) -> str | None:
        """The model an answer goes on with: the one that wrote its last part (another model took over
        mid-answer) while it is served, else its own."""
        last = answer.answer_parts[-1].model if answer.answer_parts else None
        return last if last is not None and self.serves(last) else answer.model

    def _serving(self, model: str) -> list[Candidate]:
        return [
            Candidate(upstream, model)
            for upstream in self.by_name.values()
            if upstream.serves_any or model in upstream.model_ids()
        ]

    def _known(self) -> list[str]:
        return [model for upstream in self.by_name.values() for model in upstream.model_ids()]

    async def discover(self) -> None:
        """Ask again every upstream that lists its models (``discover``, ``any``)."""
        await asyncio.gather(*(upstream.discover() for upstream in self.by_name.values()))

    def catalog(self) -> list[JSONObject]:
        """The union of the upstreams' models (the first upstream's entry for a model two serve), then the
        aliases, each owned as the model it names."""
        models: dict[str, JSONObject] = {}
        for upstream in self.by_name.values():
            for entry in upstream.catalog():
                models.setdefault(str(entry["id"]), entry)
        for alias, model in self.aliases.items():
            if model in models:
                models.setdefault(alias, models[model] | {"id": alias})
        return list(models.values())

    def health(self) -> list[UpstreamHealth]:
        return [upstream.health() for upstream in self.by_name.values()]

    async def close(self) -> None:
        await asyncio.gather(*(upstream.client.close() for upstream in self.by_name.values()))
