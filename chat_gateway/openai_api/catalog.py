"""The models the gateway answers with: the upstream's list, cached briefly, in OpenAI's shape."""

import logging
import time
from typing import Any

import openai
from openai import AsyncOpenAI

from chat_gateway.config import Settings
from shared import JSONObject, NotFound

logger = logging.getLogger(__name__)

# A list request waits this long at most: a client listing models should not hang on a slow upstream.
LIST_TIMEOUT_SECONDS = 5.0


class ModelCatalog:
    """``GET /v1/models``: what the upstream lists (cached ``models_cache_seconds``), else the configured default.

    Servers without a list (or with an empty one, or unreachable) still have the default: every request without
    a ``model`` is answered with it.
    """

    def __init__(self, settings: Settings, client: AsyncOpenAI | None) -> None:
        self.settings = settings
        self.client = client
        self._models: list[JSONObject] = []
        self._until = 0.0

    async def models(self) -> list[JSONObject]:
        if time.monotonic() >= self._until:
            self._models = await self._fetch() or [self._default()]
            self._until = time.monotonic() + self.settings.models_cache_seconds
        return self._models

    async def model(self, model_id: str) -> JSONObject:
        for model in await self.models():
            if model.get("id") == model_id:
                return model
        raise NotFound(f"the model {model_id!r} does not exist")

    async def _fetch(self) -> list[JSONObject]:
        if self.client is None:
            return []
        try:
            page: Any = await self.client.get("/models", cast_to=object, options={"timeout": LIST_TIMEOUT_SECONDS})
        except (openai.APIError, openai.APIConnectionError) as exc:
            logger.info("the upstream lists no models (%s): the default stands for them", exc.__class__.__name__)
            return []
        data = page.get("data") if isinstance(page, dict) else None
        return [model for model in data or [] if isinstance(model, dict) and isinstance(model.get("id"), str)]

    def _default(self) -> JSONObject:
        return {"id": self.settings.openai_model, "object": "model", "created": 0, "owned_by": "durable-chat"}
