import pytest

from tests.openapi_fuzz import assert_documented_answers
from tests.persistence.conftest import API_KEY

pytestmark = pytest.mark.slow  # starts processes: left out of `make test-fast`


def test_generated_requests_get_documented_answers_never_a_5xx(live_url: str) -> None:
    assert assert_documented_answers(live_url, {"x-api-key": API_KEY}) > 20
