from typing import Annotated, Literal

from fastapi import Depends, Query, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from chat_gateway.answers.service import Answers
from chat_gateway.auth.identity import Authenticator, Caller
from chat_gateway.clients.persistence import PersistenceClient
from chat_gateway.config import Settings
from chat_gateway.openai_api.catalog import ModelCatalog
from chat_gateway.openai_api.ids import Named, conversation_path, response_path
from chat_gateway.openai_api.responses.items import ItemPage
from chat_gateway.upstreams.registry import Upstreams
from shared import presented_key

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


async def get_catalog(request: Request) -> ModelCatalog:
    catalog: ModelCatalog = request.app.state.catalog
    return catalog


async def get_upstreams(request: Request) -> Upstreams:
    upstreams: Upstreams = request.app.state.upstreams
    return upstreams


SettingsDep = Annotated[Settings, Depends(get_settings)]
UpstreamsDep = Annotated[Upstreams, Depends(get_upstreams)]
CatalogDep = Annotated[ModelCatalog, Depends(get_catalog)]
PersistenceDep = Annotated[PersistenceClient, Depends(get_persistence)]
AnswersDep = Annotated[Answers, Depends(get_answers)]

_key_header = APIKeyHeader(
    name="x-api-key", auto_error=False, description="A user key, or an admin key (CHAT_ADMIN_KEYS)."
)
_bearer = HTTPBearer(auto_error=False, description="The same keys, or a JWT, as OpenAI clients send them.")


async def get_caller(
    request: Request,
    # Declared for the OpenAPI document (and Swagger's Authorize); presented_key reads them, with one rule.
    _key: Annotated[str | None, Security(_key_header)],
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Caller:
    """Who calls, from the credential alone; the request counted against their limit, a refused credential
    against its address's (AUTH_FAILURE_LIMIT)."""
    auth: Authenticator = request.app.state.auth
    address = request.client.host if request.client is not None else "unknown"
    caller = await auth.identify(presented_key(request.headers), address)
    if (verdict := await auth.count(caller)) is not None:
        request.state.rate_limit_headers = verdict.headers()
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_item_page(
    after: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> ItemPage:
    """OpenAI's list parameters, for a response's input items and a conversation's items alike."""
    return ItemPage(after, limit, order)


ItemPageDep = Annotated[ItemPage, Depends(get_item_page)]


# A route's {response_id} and {conversation_id}, parsed before the route runs: one that names nothing is a 404.
ResponsePath = Annotated[Named, Depends(response_path)]
ConversationPath = Annotated[Named, Depends(conversation_path)]
