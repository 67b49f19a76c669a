from fastapi import APIRouter

from chat_gateway.deps import PersistenceDep
from shared import ErrorCode, ServiceUnavailable
from shared.contract import Health

router = APIRouter(prefix="/health", tags=["health"])


@router.get("")
async def health() -> Health:
    """Liveness: the process is up."""
    return Health(status="ok")


@router.get("/ready", responses={503: {"description": "The persistence service is unreachable."}})
async def ready(persistence: PersistenceDep) -> Health:
    """Readiness: the persistence service answers."""
    if not await persistence.ready():
        raise ServiceUnavailable("persistence service unreachable", code=ErrorCode.NOT_READY)
    return Health(status="ready")
