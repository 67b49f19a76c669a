import pytest
from pydantic import SecretStr

from chat_gateway.config import Settings
from chat_gateway.upstreams.config import ConfigError
from chat_gateway.upstreams.registry import Upstreams
from shared import ErrorCode, NotFound
from tests.chat_gateway.upstreams.conftest import Fake

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("clients_closed")]


def _registry(
    fakes: list[Fake], aliases: dict[str, str] | None = None, fallbacks: dict[str, list[str]] | None = None
) -> Upstreams:
    a, b, c = fakes
    upstreams = [a.upstream("a", ["llama", "qwen"]), b.upstream("b", ["llama"]), c.upstream("c", "discover")]
    return Upstreams(upstreams, "llama", aliases, fallbacks)


def _path(registry: Upstreams, model: str | None) -> list[tuple[str, str]]:
    return [(c.upstream.name, c.model) for c in registry.route(model).candidates]


async def test_a_model_goes_to_every_upstream_serving_it_then_to_its_fallbacks(fakes: list[Fake]) -> None:
    fakes[2].app.state.models = ["gpt-x"]
    registry = _registry(fakes, aliases={"fast": "qwen"}, fallbacks={"llama": ["gpt-x"]})
    await registry.discover()
    assert _path(registry, "llama") == [("a", "llama"), ("b", "llama"), ("c", "gpt-x")]
    assert _path(registry, None) == _path(registry, "llama")  # the default model
    assert _path(registry, "fast") == [("a", "qwen")]
    assert registry.route("fast").model == "qwen"
    assert _path(registry, "gpt-x") == [("c", "gpt-x")]


async def test_an_unknown_model_is_a_404_listing_the_models(fakes: list[Fake]) -> None:
    registry = _registry(fakes, aliases={"fast": "qwen"})
    with pytest.raises(NotFound) as missing:
        registry.route("gpt-5")
    assert missing.value.code == ErrorCode.MODEL_NOT_FOUND
    assert missing.value.detail == "The model 'gpt-5' does not exist. The models are: fast, llama, qwen"


async def test_the_catalog_is_the_union_each_with_its_owner(fakes: list[Fake]) -> None:
    fakes[2].app.state.models = ["gpt-x", "llama"]
    registry = _registry(fakes, aliases={"fast": "gpt-x"})
    await registry.discover()
    owners = {model["id"]: model["owned_by"] for model in registry.catalog()}
    assert owners == {"llama": "a", "qwen": "a", "gpt-x": "fake", "fast": "fake"}  # as c lists them


async def test_an_upstream_serving_any_model_takes_what_is_asked(fakes: list[Fake]) -> None:
    registry = Upstreams([fakes[0].upstream("default", "any")], "fake-model")
    assert _path(registry, "whatever") == [("default", "whatever")]
    assert registry.catalog() == []  # it lists none (its /v1/models is a 404): the catalog says the default


async def test_an_entry_naming_a_model_no_upstream_discovered_stops_start_up(fakes: list[Fake]) -> None:
    fakes[2].app.state.models = ["gpt-x"]
    registry = _registry(fakes, fallbacks={"llama": ["gpt-y"]})
    with pytest.raises(ConfigError) as stopped:
        await registry.start(Settings(api_key=SecretStr("k")))
    assert (
        str(stopped.value)
        == "fallbacks: 'llama' names 'gpt-y', which no upstream serves (they serve: gpt-x, llama, qwen)"
    )
    await _registry(fakes, aliases={"fast": "gpt-x"}, fallbacks={"llama": ["gpt-x"]}).start(
        Settings(api_key=SecretStr("k"))
    )


async def test_while_an_upstream_lists_nothing_an_unserved_entry_is_only_said(
    fakes: list[Fake], caplog: pytest.LogCaptureFixture
) -> None:
    registry = _registry(fakes, aliases={"fast": "gpt-y"})  # c's /v1/models is a 404: what it serves is unknown
    await registry.start(Settings(api_key=SecretStr("k")))
    assert "aliases: 'fast' names 'gpt-y', which no upstream serves (yet: c listed no models)" in caplog.text
    with pytest.raises(NotFound):
        registry.route("fast")
