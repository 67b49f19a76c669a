import pytest

from tests.chat_gateway.conftest import LocalService
from tests.openapi_fuzz import assert_documented_answers

pytestmark = pytest.mark.slow  # starts processes: left out of `make test-fast`


def test_generated_requests_get_documented_answers_never_a_5xx(gateway: LocalService) -> None:
    """Against the real services and the fake upstream, which answers every chat."""
    assert assert_documented_answers(gateway.url, {}) > 10
