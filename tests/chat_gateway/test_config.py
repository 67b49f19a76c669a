import pytest
from pydantic import SecretStr

from chat_gateway.config import Settings


@pytest.mark.parametrize(
    ("base_url", "mode", "exact"),
    [
        (None, "auto", False),  # OpenAI's own API answers a continuation with a new message
        ("https://api.openai.com/v1", "auto", False),
        ("http://127.0.0.1:8080/v1", "auto", True),  # llama.cpp, Ollama... continue the text itself
        ("http://llm:8000/v1", "auto", True),
        ("http://127.0.0.1:8080/v1", "restart", False),  # vLLM without continue_final_message, say
        (None, "exact", True),
    ],
)
def test_how_the_upstream_continues_is_configured_or_follows_its_address(
    base_url: str | None, mode: str, exact: bool
) -> None:
    settings = Settings(api_key=SecretStr("k"), openai_base_url=base_url, upstream_continuation=mode)
    assert settings.continues_exactly is exact
