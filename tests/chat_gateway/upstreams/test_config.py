from pathlib import Path

import pytest
from pydantic import SecretStr

from chat_gateway.config import Settings
from chat_gateway.main import create_app
from chat_gateway.upstreams.config import ConfigError, load
from chat_gateway.upstreams.registry import single_upstream

# TOML's other spelling of the same tables: inline, on one line each.
GOOD = """
upstreams = [
  {{name = "local", base_url = "http://h/v1", models = ["llama", "qwen"], continuation = "exact", max_concurrency = 2}},
  {{ name = "hosted", api_key_file = "{key_file}", models = "discover" }},
]
aliases = {{ fast = "llama" }}
fallbacks = {{ "gpt-4o" = ["llama"] }}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "upstreams.toml"
    path.write_text(text)
    return path


def test_a_file_lists_upstreams_their_models_aliases_and_fallbacks(tmp_path: Path) -> None:
    """Said inline here; the README's example (below) says it in [[upstreams]] tables."""
    key_file = tmp_path / "key"
    key_file.write_text("sk-hosted\n")
    config = load(_write(tmp_path, GOOD.format(key_file=key_file)))
    local, hosted = config.upstreams
    assert (local.name, local.models, local.continuation, local.max_concurrency) == (
        "local",
        ["llama", "qwen"],
        "exact",
        2,
    )
    assert (hosted.models, hosted.continuation, hosted.key()) == ("discover", "auto", "sk-hosted")
    assert config.aliases == {"fast": "llama"}
    assert config.fallbacks == {"gpt-4o": ["llama"]}


@pytest.mark.parametrize(
    ("text", "line", "said"),
    [
        ('[[upstreams]]\nname = "a"\n\n[[upstreams]]\nname = "b"\ntimeout_seconds = -1\n', 6, "upstreams.1.timeout"),
        ('[[upstreams]]\nname = "a"\ncontinuation = "guess"\n', 3, "upstreams.0.continuation"),
        ('[[upstreams]]\nname = "a"\nmodle = ["x"]\n', 3, "upstreams.0.modle: Extra inputs"),
        ('[[upstreams]]\nname = "a b"\n', 2, "upstreams.0.name"),
        ('[[upstreams]]\nname = "a"\n[[upstreams]]\nname = "a"\n', 1, "unique: a more than once"),
        ('[[upstreams]]\nname = "a"\n\n[aliases]\nfast = "fast"\n', 1, "another alias: fast"),
        ("[[upstreams]]\nname = a\n", 2, "not TOML"),
        ("[aliases]\n", 1, "upstreams: Field required"),
        (
            '[[upstreams]]\nname = "a"\nmodels = ["x"]\n\n[aliases]\nfast = "y"\n',
            6,
            "aliases.fast: no upstream serves 'y'",
        ),
        (
            '[[upstreams]]\nname = "a"\nmodels = ["x"]\n\n[fallbacks]\nx = ["z"]\n',
            6,
            "fallbacks.x: no upstream serves 'z'",
        ),
        (
            'upstreams = [{name = "a", models = ["x"]}]\nfallbacks = {w = ["x"]}\n',
            2,
            "fallbacks.w: no upstream serves 'w'",
        ),
        ('upstreams = [\n  {name = "a"},\n  {name = "b", models = []},\n]\n', 1, "upstreams.1: Value error"),
    ],
)
def test_a_mistake_is_said_with_the_line_of_its_entry(tmp_path: Path, text: str, line: int, said: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load(path)
    assert str(raised.value).startswith(f"{path}")
    assert f"line {line}" in str(raised.value)
    assert said in str(raised.value)


def test_models_discovered_or_any_are_checked_once_known(tmp_path: Path) -> None:
    """Only the upstreams' answers say what they serve: the registry checks those (test_registry.py)."""
    text = '[[upstreams]]\nname = "a"\nmodels = ["x"]\n[[upstreams]]\nname = "b"\nmodels = "discover"\n'
    config = load(_write(tmp_path, text + '[aliases]\nfast = "y"\n'))
    assert config.aliases == {"fast": "y"}


def test_a_missing_file_or_key_file_is_said(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load(tmp_path / "absent.toml")
    config = load(_write(tmp_path, f'[[upstreams]]\nname = "a"\napi_key_file = "{tmp_path / "nokey"}"\n'))
    with pytest.raises(ConfigError, match="upstream 'a': api_key_file"):
        config.upstreams[0].key()


def test_the_single_upstream_settings_are_one_upstream_named_default() -> None:
    settings = Settings(
        api_key=SecretStr("k"),
        openai_api_key=SecretStr("sk-up"),
        openai_base_url="http://127.0.0.1:1/v1",
        upstream_continuation="vllm",
        upstream_timeout_seconds=7,
    )
    config = single_upstream(settings)
    assert config is not None
    (default,) = config.upstreams
    assert (default.name, default.base_url, default.key(), default.models) == (
        "default",
        "http://127.0.0.1:1/v1",
        "sk-up",
        "any",
    )
    assert (default.continuation, default.timeout_seconds, default.failure_threshold) == ("vllm", 7, None)
    assert single_upstream(Settings(api_key=SecretStr("k"))) is None


def test_a_bad_file_stops_start_up_saying_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, '[[upstreams]]\nname = "a"\nmodels = "some"\n')
    with pytest.raises(SystemExit) as stopped:
        create_app(Settings(api_key=SecretStr("k"), upstreams_file=path))
    assert stopped.value.code == 3
    assert f"UPSTREAMS_FILE: {path}, line 3: upstreams.0.models" in capsys.readouterr().err


def test_the_readmes_example_is_a_good_file(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    example = readme.split("### Upstreams and fallbacks", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    config = load(_write(tmp_path, example))
    assert [upstream.name for upstream in config.upstreams] == ["local", "openai"]
    assert (config.aliases, config.fallbacks) == ({"fast": "llama-3.1-8b"}, {"gpt-4o": ["llama-3.1-8b"]})


def test_the_readmes_worked_configuration_is_a_good_file(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    worked = readme.split("#### A worked configuration", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    config = load(_write(tmp_path, worked))
    assert [(u.name, u.models, u.continuation) for u in config.upstreams] == [
        ("openai", ["gpt-4o-mini"], "restart"),
        ("local", ["gemma3-270m"], "exact"),
    ]
    assert config.fallbacks == {"gpt-4o-mini": ["gemma3-270m"]}
    mistaken = worked.replace('"gpt-4o-mini" = ["gemma3-270m"]', '"gpt-4o-mini" = ["gemma-3"]')
    line = mistaken.splitlines().index('"gpt-4o-mini" = ["gemma-3"]') + 1
    with pytest.raises(ConfigError, match=rf"line {line}: fallbacks.gpt-4o-mini: no upstream serves 'gemma-3'"):
        load(_write(tmp_path, mistaken))
