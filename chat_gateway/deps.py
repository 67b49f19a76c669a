from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from chat_gateway.config import Settings
from chat_gateway.persistence import PersistenceClient
from chat_gateway.service import Answers
from shared import Unauthorized, key_matches, presented_key

# Every dependency is `async def`: FastAPI runs a plain `def` in its thread pool, a hop per dependency per request.


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_persistence(request: Request) -> PersistenceClient:
    persistence: PersistenceClient = request.app.state.persistence
    return persistence


async def get_answers(request: Request) -> Answers:
    answers: Answers = request.app.state.answers
    return answers


SettingsDep = Annotated[Settings, Depends(get_settings)]
PersistenceDep = Annotated[PersistenceClient, Depends(get_persistence)]
AnswersDep = Annotated[Answers, Depends(get_answers)]

_client_key_header = APIKeyHeader(
    name="x-api-key", auto_error=False, description="One of CHAT_API_KEYS, when client auth is on."
)


_bearer = HTTPBearer(auto_error=False, description="The same keys, as OpenAI clients send them.")


async def require_client_key(
    request: Request,
    settings: SettingsDep,
    # Declared for the OpenAPI document (and Swagger's Authorize); presented_key reads them, with one rule.
    _key: Annotated[str | None, Security(_client_key_header)],
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> None:
    if not settings.client_keys:
        return
    if not key_matches(presented_key(request.headers), settings.client_keys):
        raise Unauthorized("missing or invalid key: send it in x-api-key, or as Authorization: Bearer <key>")


ClientKeyDep = Depends(require_client_key)
