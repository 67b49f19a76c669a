"""resp_ and conv_ ids: parsed once, before a route runs; one that names nothing is a 404, as an unknown one is."""

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from chat_gateway.config import Settings
from chat_gateway.main import create_app
from chat_gateway.openai_api.ids import conversation_id, message_id_of, response_id, session_of
from shared import NotFound

ID = uuid.UUID("0123456789abcdef0123456789abcdef")


def test_ids_round_trip_and_a_conversations_prefix_may_be_left_out() -> None:
    assert (response_id(ID), conversation_id(ID)) == (f"resp_{ID.hex}", f"conv_{ID.hex}")
    assert message_id_of(response_id(ID)) == ID
    assert session_of(conversation_id(ID)) == session_of(ID.hex) == ID


@pytest.mark.parametrize("response", ["resp_0123", ID.hex, f"conv_{ID.hex}", "resp_"])
def test_a_response_id_that_names_no_answer_is_not_found(response: str) -> None:
    with pytest.raises(NotFound, match="no response"):
        message_id_of(response)


@pytest.fixture
def gateway() -> Iterator[TestClient]:
    settings = Settings(
        api_key=SecretStr("persistence-key"),
        api_base_url="http://127.0.0.1:1",  # nothing listens: a bad id never gets that far
        openai_api_key=SecretStr("sk-test"),
        recovery_interval_seconds=3600,
        persistence_retry_attempts=1,
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/responses/resp_nope"),
        ("GET", "/v1/responses/nope/input_items"),
        ("POST", "/v1/responses/resp_0123/cancel"),
        ("DELETE", f"/v1/responses/{ID.hex}"),
        ("GET", "/v1/conversations/conv_nope"),
        ("DELETE", "/v1/conversations/conv_0123"),
        ("GET", "/v1/conversations/nope/items/msg_0"),
    ],
)
def test_a_path_id_that_names_nothing_is_a_404_in_openais_shape(gateway: TestClient, method: str, path: str) -> None:
    response = gateway.request(method, path)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["type"] == "not_found_error"
