from fastapi import APIRouter
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from persistence.db import Database
from persistence.deps import DbDep
from shared import ErrorCode, ServiceUnavailable
from shared.contract import Health

router = APIRouter(prefix="/health", tags=["health"])


@router.get("")
async def health() -> Health:
    """Liveness: the process is up."""
    return Health(status="ok")


def _ping(db: Session) -> None:
    db.execute(text("SELECT 1"))


async def check_database(db: Database) -> None:
    """A 503 unless the database answers."""
    try:
        await db.run_autocommit(_ping)
    except SQLAlchemyError as exc:
        raise ServiceUnavailable("database unreachable", code=ErrorCode.NOT_READY) from exc


@router.get("/ready", responses={503: {"description": "The database is unreachable."}})
async def ready(db: DbDep) -> Health:
    """Readiness: the database answers."""
    await check_database(db)
    return Health(status="ready")
