from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from persistence.schemas import Health
from shared import ServiceUnavailable

router = APIRouter(prefix="/health", tags=["health"])


@router.get("")
def health() -> Health:
    """Liveness: the process is up."""
    return Health(status="ok")


def _ping(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


@router.get("/ready", responses={503: {"description": "The database is unreachable."}})
async def ready(request: Request) -> Health:
    """Readiness: the database answers."""
    try:
        await run_in_threadpool(_ping, request.app.state.engine)
    except SQLAlchemyError as exc:
        raise ServiceUnavailable("database unreachable", code="not_ready") from exc
    return Health(status="ready")
