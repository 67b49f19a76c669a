"""The models the gateway answers with: its upstreams' lists, cached briefly, in OpenAI's shape."""

import time

from chat_gateway.config import Settings
from chat_gateway.upstreams.registry import Upstreams
from shared import ErrorCode, JSONObject, NotFound


class ModelCatalog:
    """``GET /v1/models``: the union of the upstreams' models (chat_gateway/upstreams/registry.py), their lists
    asked again every ``models_cache_seconds``, else the configured default.

    Servers without a list (or with an empty one, or unreachable) still have the default: every request without
    a ``model`` is answered with it.
    """

    def __init__(self, settings: Settings, upstreams: Upstreams) -> None:
        self.settings = settings
        self.upstreams = upstreams
        self._until = 0.0

    async def models(self) -> list[JSONObject]:
        if time.monotonic() >= self._until:
            await self.upstreams.discover()
            self._until = time.monotonic() + self.settings.models_cache_seconds
        return self.upstreams.catalog() or [self._default()]

    async def model(self, model_id: str) -> JSONObject:
        for model in await self.models():
            if model.get("id") == model_id:
                return model
        raise NotFound(f"the model {model_id!r} does not exist", code=ErrorCode.MODEL_NOT_FOUND)

    def _default(self) -> JSONObject:
        return {"id": self.settings.openai_model, "object": "model", "created": 0, "owned_by": "durable-chat"}
