"""Keys go only where the user pointed them: the openai backend's call plan, the routing
filter by backend, and `executor run` refusing (or running without) a registry entry.

The model server is tests/fake_openai.py on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.openai_plan import Direct, Routed, plan_calls
from session.config_models import DEFAULT_MODELS, Config
from session.routing import next_after_failure, select_model
from session.routing_chain import key_endpoint
from session.routing_types import AttemptState
from tests.fake_openai import FakeOpenAI, Reply
from tests.sessions import write_session

KEY = "sk-test-openai-endpoint-key-9999"
BUILTIN = Config.model_validate({"models": [dict(m) for m in DEFAULT_MODELS]})
USER_LOCAL = {
    "name": "my-llama",
    "provider": "openai-compatible",
    "backend": "openai",
    "tier": "FREE",
    "input_per_mtok": 0.0,
    "output_per_mtok": 0.0,
    "context_window": 32_768,
    "base_url": "http://127.0.0.1:9999/v1",
}
WITH_LOCAL = Config.model_validate({"models": [*(dict(m) for m in DEFAULT_MODELS), USER_LOCAL]})


# --------------------------------------------------------------------------- where a key may go


def test_no_built_in_model_is_an_endpoint() -> None:
    assert all(model.base_url is None for model in BUILTIN.models)
    assert all(key_endpoint(model) is None for model in BUILTIN.models if model.provider != "openai")


def test_an_openai_key_goes_to_openai_or_the_url_the_user_set() -> None:
    gpt = BUILTIN.find_model("gpt-5")
    assert gpt is not None
    assert key_endpoint(gpt) == "https://api.openai.com/v1"
    assert key_endpoint(gpt, "https://gateway.example/v1") == "https://gateway.example/v1"
    claude = BUILTIN.find_model("claude-sonnet-4-5")
    assert claude is not None
    assert key_endpoint(claude, "https://gateway.example/v1") is None  # an anthropic key never goes there
    local = WITH_LOCAL.find_model("my-llama")
    assert local is not None
    assert key_endpoint(local, "https://elsewhere.example/v1") == "http://127.0.0.1:9999/v1"


def test_routing_for_a_backend_chooses_only_the_models_it_runs() -> None:
    assert select_model(WITH_LOCAL, "high", approved_critical=True, backend="openai").model.name == "my-llama"
    assert select_model(WITH_LOCAL, "high", approved_critical=True).model.name == "claude-opus-4-1"
    state = AttemptState(backend="codex")
    decision = next_after_failure(WITH_LOCAL, "gpt-5", "overloaded", state)
    assert decision.model == "gpt-5-mini"  # the codex models only, never my-llama or claude's
    assert next_after_failure(WITH_LOCAL, "gpt-5-mini", "overloaded", state).reason.endswith("exhausted")


# --------------------------------------------------------------------------- the call plan


def _plan(model: str | None, base: str | None, config: Config = BUILTIN) -> Direct | Routed | str:
    return plan_calls("writer", model, base, config.find_model, any(m.backend == "openai" for m in config.models))


def test_no_model_and_no_openai_registry_entry_is_refused_naming_the_fix() -> None:
    problem = _plan(None, None)
    assert isinstance(problem, str)
    assert "`model:` and `base_url:`" in problem
    assert "OPENAI_MODEL and OPENAI_BASE_URL" in problem
    assert 'backend = "openai"' in problem


def test_a_model_the_registry_lacks_needs_a_base_url() -> None:
    problem = _plan("qwen2.5-coder", None)
    assert isinstance(problem, str)
    assert "'qwen2.5-coder', which is not in the model registry" in problem
    assert "`base_url:`" in problem
    assert _plan("qwen2.5-coder", "http://127.0.0.1:8000/v1") == Direct("qwen2.5-coder", "http://127.0.0.1:8000/v1")


def test_a_vendor_model_without_an_endpoint_is_refused() -> None:
    problem = _plan("claude-sonnet-4-5", None)
    assert isinstance(problem, str)
    assert "anthropic model" in problem


def test_registry_models_are_routed() -> None:
    assert _plan("gpt-5", None) == Routed("gpt-5")
    assert _plan(None, None, WITH_LOCAL) == Routed(None)
    assert _plan("my-llama", None, WITH_LOCAL) == Routed("my-llama")


def test_a_malformed_base_url_is_refused() -> None:
    problem = _plan("m", "ftp://x")
    assert isinstance(problem, str)
    assert "http://" in problem


# --------------------------------------------------------------------------- `executor run`


def _session(tmp_path: Path, extra: str) -> Path:
    return write_session(
        tmp_path / "s", {"writer": "WRITE"}, {"WRITE-001": []}, role_extra={"writer": "backend: openai\n" + extra}
    )


def test_a_run_with_no_registry_entry_and_no_endpoint_is_refused_before_it_starts(executor_cli, tmp_path):
    folder = _session(tmp_path, "")
    result = executor_cli("run", "--session", str(folder), env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": ""})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "names no model" in result.stderr
    assert "OPENAI_MODEL and OPENAI_BASE_URL" in result.stderr
    assert not (folder / ".executor" / "logs").exists()  # no attempt started
    assert KEY not in result.stdout + result.stderr


def test_a_model_not_in_the_registry_without_a_base_url_is_refused(executor_cli, tmp_path):
    folder = _session(tmp_path, "model: qwen2.5-coder\n")
    result = executor_cli("run", "--session", str(folder), env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": ""})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "not in the model registry" in result.stderr


@pytest.mark.parametrize("where", ["role-spec", "env"])
def test_base_url_and_model_run_without_a_registry_entry(executor_cli, tmp_path, where):
    with FakeOpenAI(keys=(KEY,), models=("qwen2.5-coder",)) as fake:
        fake.script(Reply("[writer] WRITE-001 done: written without a registry entry."))
        env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": "", "OPENAI_MODEL": ""}
        if where == "role-spec":
            folder = _session(tmp_path, f"model: qwen2.5-coder\nbase_url: {fake.base_url}\n")
        else:
            folder = _session(tmp_path, "")
            env.update(OPENAI_BASE_URL=fake.base_url, OPENAI_MODEL="qwen2.5-coder")
        result = executor_cli("run", "--session", str(folder), "--max-attempts", "1", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        (request,) = fake.chat_requests(key=KEY)
        assert request.body["model"] == "qwen2.5-coder"
    assert "without a registry entry" in next((folder / "artifacts").glob("WRITE-001*")).read_text()


def test_the_openai_key_is_not_sent_to_another_providers_endpoint(executor_cli, tmp_path):
    with FakeOpenAI(models=("my-llama",)) as fake:  # a local server that asks for no key
        fake.script(Reply("[writer] WRITE-001 done on the local model."))
        folder = _session(tmp_path, "")
        (folder / "executor.toml").write_text(
            '[[models]]\nname = "my-llama"\nprovider = "openai-compatible"\nbackend = "openai"\ntier = "FREE"\n'
            f'input_per_mtok = 0\noutput_per_mtok = 0\ncontext_window = 32768\nbase_url = "{fake.base_url}"\n'
        )
        env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": "", "OPENAI_MODEL": ""}
        result = executor_cli("run", "--session", str(folder), "--max-attempts", "1", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        (request,) = fake.chat_requests()
        assert request.model == "my-llama"
        assert request.key is None, "OpenAI's key went to a server of another provider"
