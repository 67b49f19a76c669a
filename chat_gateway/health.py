from fastapi import APIRouter

from chat_gateway.deps import PersistenceDep, UpstreamsDep
from chat_gateway.upstreams.upstream import UpstreamHealth
from shared import ErrorCode, ServiceUnavailable
from shared.contract import Health

router = APIRouter(prefix="/health", tags=["health"])


class Readiness(Health):
    # Each upstream's breaker, latency and error rate: said, not judged (a chat goes to whichever answers).
    upstreams: list[UpstreamHealth]


@router.get("")
async def health() -> Health:
    """Liveness: the process is up."""
    return Health(status="ok")


@router.get("/ready", responses={503: {"description": "The persistence service is unreachable."}})
async def ready(persistence: PersistenceDep, upstreams: UpstreamsDep) -> Readiness:
    """Readiness: the persistence service answers; how each upstream is doing."""
    if not await persistence.ready():
        raise ServiceUnavailable("persistence service unreachable", code=ErrorCode.NOT_READY)
    return Readiness(status="ready", upstreams=upstreams.health())
