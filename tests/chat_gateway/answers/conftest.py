from collections.abc import AsyncIterator

import pytest

from chat_gateway.answers.log import AnswerLog, connect
from tests.conftest import redis_url_or_skip


@pytest.fixture
async def log() -> AsyncIterator[AnswerLog]:
    """The answer log, in the tests' Redis."""
    answer_log = connect(redis_url_or_skip(), timeout_seconds=2)
    yield answer_log
    await answer_log.close()
