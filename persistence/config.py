from typing import ClassVar

from pydantic import Field, SecretStr
from sqlalchemy import URL, make_url

from shared import ServiceSettings, split_keys

DEFAULT_DATABASE_URL = "sqlite:///data/persistence.db"


class Settings(ServiceSettings):
    service_name: ClassVar[str] = "persistence"

    api_key: SecretStr
    database_url: str = DEFAULT_DATABASE_URL
    db_password: SecretStr | None = None
    # Connections per process, and as many threads to use them: more threads than that only fight over the
    # GIL (docs/benchmarks.md); requests beyond it wait their turn on the event loop.
    db_pool_size: int = Field(default=4, ge=1, le=500)
    lease_seconds: float = Field(default=30.0, gt=0, le=3600)
    # Four times the gateway's default: a turn carries an OpenAI-compatible client's whole prompt, which the
    # gateway took in a request of up to its own limit.
    max_body_bytes: int = Field(default=4 * 1_048_576, ge=1024)
    migrate_on_start: bool = True

    @property
    def api_keys(self) -> tuple[str, ...]:
        return split_keys(self.api_key)

    @property
    def sqlalchemy_url(self) -> URL:
        """The database URL, with ``DB_PASSWORD`` filled in where the URL has no password."""
        url = make_url(self.database_url)
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        if self.db_password is not None and url.password is None and not url.drivername.startswith("sqlite"):
            url = url.set(password=self.db_password.get_secret_value())
        return url
