"""The configuration: merge order, every bad config rejected with its file, key and fix, secrets never shown."""

from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.pricing import estimate_cost
from backends.registry import backend_names
from session.config import ConfigInvalid, inspect_config, load_config, redacted_dump
from session.config_fields import TIERS
from session.config_models import DEFAULT_MODELS
from session.config_sources import BUILTIN
from session.secret import Secret

BACKENDS = backend_names()
ANTHROPIC_KEY = "sk-ant-api03-SECRETvalueNEVERshown-3f9a"
OPENAI_KEY = "sk-proj-OTHERsecretVALUE-77Zq"
ENV_KEY = "sk-ant-api03-FROMtheENVIRONMENT-k9P2"


@pytest.fixture(autouse=True)
def user_dir(tmp_path, monkeypatch):
    folder = tmp_path / "user-config"
    folder.mkdir()
    monkeypatch.setenv("TEAM_EXECUTOR_CONFIG_DIR", str(folder))
    return folder


@pytest.fixture
def session(tmp_path):
    folder = tmp_path / "session"
    folder.mkdir()
    return folder


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(**kwargs):
    return load_config(known_backends=BACKENDS, **kwargs)


def rejected(**kwargs) -> list:
    with pytest.raises(ConfigInvalid) as caught:
        load(**kwargs)
    errors = [problem for problem in caught.value.problems if problem.severity == "error"]
    assert errors
    for problem in errors:
        assert problem.file
        assert problem.message
        assert problem.fix
    return errors


def hydra(keys, **extra) -> str:
    return json.dumps({"keys": keys, **extra})


# --------------------------------------------------------------------------- defaults and merging


def test_the_defaults_load_with_no_file_anywhere():
    config = load()
    assert config.run.max_workers == 4
    assert config.run.max_attempts == 3
    assert config.run.retry_backoff_s == 2.0
    assert config.run.shutdown_grace_s == 10.0
    assert config.router.fallback == ["CRITICAL", "PREMIUM", "STANDARD", "FREE"]
    assert config.router.critical_needs_approval is True
    assert config.router.network_retries == 3
    assert config.budget.warn_at == 0.8
    assert config.budget.session_usd is None
    assert config.keys.rotation == "round_robin"
    assert config.keys.env["anthropic"] == ["ANTHROPIC_API_KEY"]
    assert config.sources == [BUILTIN]
    assert [model.name for model in config.models] == [model["name"] for model in DEFAULT_MODELS]
    tiers = {tier: {model.name for model in config.models_in_tier(tier)} for tier in TIERS}
    assert tiers["CRITICAL"] == {"claude-opus-4-1"}
    assert tiers["PREMIUM"] == {"claude-sonnet-4-5", "gpt-5", "gemini-2.5-pro"}
    assert tiers["STANDARD"] == {"gpt-5-mini", "gemini-2.5-flash", "claude-haiku-4-5"}
    # Nothing built in is an endpoint: a key goes only where the user pointed it.
    assert all(model.base_url is None for model in config.models)
    assert config.find_model("local-llama") is None
    assert all(problem.severity == "warning" for problem in config.warnings)


def test_the_registry_prices_agree_with_the_price_table_it_replaces():
    config = load()
    for name in ("claude-opus-4-1", "claude-sonnet-4-5", "gpt-5", "gpt-5-mini", "gemini-2.5-pro", "gemini-2.5-flash"):
        assert config.estimate_cost(name, 120_000, 8_000, 20_000) == estimate_cost(name, 120_000, 8_000, 20_000)


def test_find_model_takes_the_longest_registered_prefix_and_ignores_a_provider_prefix():
    config = load()
    assert config.find_model("gpt-5-mini-2025-08-07").name == "gpt-5-mini"
    assert config.find_model("openai/gpt-5").name == "gpt-5"
    assert config.find_model("claude-sonnet-4-5-20250929").name == "claude-sonnet-4-5"
    assert config.find_model("llama-3") is None
    assert config.estimate_cost("llama-3", 1, 1) is None


def test_sources_merge_in_order_tables_key_by_key_and_arrays_replaced(user_dir, session, tmp_path):
    write(
        user_dir / "config.toml",
        '[run]\nmax_workers = 2\nmax_attempts = 5\n[keys.env]\nopenai = ["MY_OPENAI"]\n'
        '[roles.coder]\nskills = ["a"]\ntimeout = 60\n',
    )
    write(
        session / "executor.toml",
        "[run]\nmax_workers = 3\n[roles.coder]\ntimeout = 90\n"
        '[[models]]\nname = "m1"\nprovider = "openai"\nbackend = "codex"\ntier = "premium"\n'
        "input_per_mtok = 1\noutput_per_mtok = 2\ncontext_window = 1000\n",
    )
    explicit = write(tmp_path / "explicit.toml", "[run]\nmax_workers = 6\n")
    config = load(session=session, explicit=explicit)
    assert config.run.max_workers == 6  # --config wins
    assert config.run.max_attempts == 5  # the user file, untouched by later ones
    assert config.roles["coder"].timeout == 90  # the session beats the user ...
    assert config.roles["coder"].skills == ["a"]  # ... key by key
    assert [model.name for model in config.models] == ["m1"]  # arrays replace
    assert config.models[0].tier == "PREMIUM"
    assert config.models[0].cost(1_000_000, 0, 500_000) == 1.0  # no cached price: the input price
    assert config.keys.env["openai"] == ["MY_OPENAI"]
    assert config.keys.env["anthropic"] == ["ANTHROPIC_API_KEY"]  # built-in entry kept
    assert config.sources == [BUILTIN, str(user_dir / "config.toml"), str(session / "executor.toml"), str(explicit)]
    assert config.role_skills() == {"coder": ["a"]}
    assert config.role("qa").backend is None


def test_the_gates_extra_variables_come_only_from_files_outside_the_agents_reach(user_dir, session, tmp_path):
    # run.gate_env hands variables of your environment to the gates, which run code agents wrote:
    # set in the session's executor.toml (which agents can write) it could name any key.
    write(user_dir / "config.toml", '[run]\ngate_env = ["DATABASE_URL", "GO*"]\n')
    assert load(session=session).run.gate_env == ["DATABASE_URL", "GO*"]
    explicit = write(tmp_path / "outside.toml", '[run]\ngate_env = ["JAVA_HOME"]\n')
    assert load(session=session, explicit=explicit).run.gate_env == ["JAVA_HOME"]
    write(session / "executor.toml", '[run]\ngate_env = ["OPENAI_API_KEY"]\n')
    (problem,) = rejected(session=session)
    assert (problem.file, problem.field) == (str(session / "executor.toml"), "run.gate_env")
    assert "within the agents' reach" in problem.message
    assert "config folder" in problem.fix
    write(session / "executor.toml", "[run]\nmax_workers = 2\n")  # the rest of [run] stays the session's to set
    assert load(session=session).run.gate_env == ["DATABASE_URL", "GO*"]
    write(user_dir / "config.toml", '[run]\ngate_env = ["$(rm -rf ~)"]\n')
    (bad,) = rejected(session=session)
    assert bad.field is not None
    assert bad.field.startswith("run.gate_env")


def test_hydra_keys_seed_sits_under_every_toml_file(user_dir):
    write(user_dir / "hydra_keys.json", hydra([], rotation_strategy="random", fallback=["premium", "free"]))
    config = load()
    assert config.keys.rotation == "random"
    assert config.router.fallback == ["PREMIUM", "FREE"]
    write(user_dir / "config.toml", '[keys]\nrotation = "least_used"\n')
    assert load().keys.rotation == "least_used"


def test_a_string_fallback_in_hydra_keys_names_the_last_resort_backend(user_dir):
    write(user_dir / "hydra_keys.json", hydra([], fallback="opencode"))
    assert load().router.fallback_backend == "opencode"
    write(user_dir / "hydra_keys.json", hydra([], fallback="opencod"))
    (problem,) = rejected()
    assert problem.field == "fallback"
    assert "did you mean 'opencode'" in problem.fix


def test_missing_user_and_session_files_are_absent_but_a_missing_explicit_file_is_an_error(session, tmp_path):
    assert load(session=session).sources == [BUILTIN]
    missing = tmp_path / "nope.toml"
    (problem,) = rejected(explicit=missing)
    assert problem.file == str(missing)
    assert problem.message == "config file not found"
    assert "--config" in problem.fix


# --------------------------------------------------------------------------- every bad config, with its message

MODEL = 'name = "{name}"\nprovider = "openai"\nbackend = "codex"\ntier = "STANDARD"\n'
MODEL += "input_per_mtok = 1.0\noutput_per_mtok = 2.0\ncontext_window = 1000\n"


@pytest.mark.parametrize(
    ("text", "field", "message", "fix"),
    [
        ("[run]\nmax_worker = 2\n", "run.max_worker", "unknown key 'max_worker'", "did you mean 'max_workers'?"),
        ("[runn]\n", "runn", "unknown key 'runn'", "did you mean 'run'?"),
        ('[run]\nmax_workers = "4"\n', "run.max_workers", "expected an integer, found a string", "without quotes"),
        ("[run]\nmax_workers = 2.5\n", "run.max_workers", "expected an integer, found a float", "whole number"),
        ("[run]\nmax_workers = 0\n", "run.max_workers", "must be at least 1", "at least 1"),
        ("[run]\nretry_backoff_s = -1\n", "run.retry_backoff_s", "must be at least 0", "at least 0"),
        ('[run]\ndefault_backend = "dmeo"\n', "run.default_backend", "unknown backend 'dmeo'", "did you mean 'demo'?"),
        ("run = 3\n", "run", "expected a table, found an integer", "[name]"),
        ('[roles.coder]\nbackend = "claud"\n', "roles.coder.backend", "unknown backend 'claud'", "'claude'"),
        ('[roles.coder]\npermission = "all"\n', "roles.coder.permission", "'all' is not one of", "'read-only'"),
        ("[roles.coder]\nmax_turns = 0\n", "roles.coder.max_turns", "must be at least 1", "at least 1"),
        ('[roles.qa]\nmodel = "gpt-9"\n', "roles.qa.model", "model 'gpt-9' is not in the registry", "[[models]]"),
        ('[roles.qa]\ntier = "GOLD"\n', "roles.qa.tier", "'GOLD' is not one of", "'PREMIUM'"),
        ('[router]\nfallback = ["PREMIUM", "GOLD"]\n', "router.fallback[1]", "'GOLD' is not one of", "'FREE'"),
        ('[router]\nfallback = ["FREE", "free"]\n', "router.fallback", "names FREE more than once", "once"),
        ("[router]\nfallback = []\n", "router.fallback", "must be at least 1 long", "at least 1"),
        ("[router]\ncritical_needs_approval = 1\n", "router.critical_needs_approval", "expected true or false", "true"),
        ('[keys]\nrotation = "lru"\n', "keys.rotation", "'lru' is not one of", "'least_used'"),
        ('[keys.env]\nantropic = ["X"]\n', "keys.env.antropic", "'antropic' is not one of", "'anthropic'"),
        ('[keys.env]\nanthropic = "ANTHROPIC_API_KEY"\n', "keys.env.anthropic", "expected an array", "["),
        ("[budget]\nwarn_at = 1.5\n", "budget.warn_at", "must be at most 1", "at most 1"),
        ("[budget]\nwarn_at = 0\n", "budget.warn_at", "must be more than 0", "more than 0"),
        ("[budget]\nsession_usd = 0\n", "budget.session_usd", "must be more than 0", "more than 0"),
        ("[[models]]\n" + MODEL.format(name="a").replace("STANDARD", "GOLD"), "models[0].tier", "'GOLD'", "'FREE'"),
        ("[[models]]\n" + MODEL.format(name="a") + "speed = 3\n", "models[0].speed", "unknown key 'speed'", "name"),
        ("[[models]]\n" + MODEL.format(name="a").replace("codex", "codx"), "models[0].backend", "'codx'", "'codex'"),
        (
            "[[models]]\n" + MODEL.format(name="a").replace("1000", "0"),
            "models[0].context_window",
            "more than 0",
            "than 0",
        ),
        ("[[models]]\n" + MODEL.format(name="a").replace("name", "nam"), "models[0].name", "required key", "add name"),
        (
            "[[models]]\n" + MODEL.format(name="a") + "[[models]]\n" + MODEL.format(name="a"),
            "models[1].name",
            "duplicate model name 'a' (also models[0])",
            "its own name",
        ),
        (
            "[[models]]\n" + MODEL.format(name="a").replace('"openai"', '"openai-compatible"'),
            "models[0]",
            "needs base_url",
            "base_url =",
        ),
        (
            "[[models]]\n" + MODEL.format(name="a") + 'base_url = "ftp://x"\n',
            "models[0].base_url",
            "http:// or https://",
            "base_url =",
        ),
    ],
)
def test_each_bad_config_is_rejected_naming_the_file_the_key_and_the_fix(user_dir, text, field, message, fix):
    path = write(user_dir / "config.toml", text)
    problems = rejected()
    assert any(p.file == str(path) and p.field == field and message in p.message and fix in p.fix for p in problems), (
        problems
    )


def test_a_key_pasted_where_a_variable_name_belongs_is_rejected_without_showing_it(user_dir):
    path = write(user_dir / "config.toml", f'[keys.env]\nanthropic = ["{ANTHROPIC_KEY}"]\n')
    (problem,) = rejected()
    assert (problem.file, problem.field) == (str(path), "keys.env.anthropic[0]")
    assert "NAME of an environment variable" in problem.message
    assert "ANTHROPIC_API_KEY" in problem.fix
    assert ANTHROPIC_KEY not in str(problem)


def test_malformed_toml_names_the_line_and_the_column(user_dir):
    path = write(user_dir / "config.toml", '[run]\nmax_workers = 4\ndefault_backend = demo"\n')
    (problem,) = rejected()
    assert problem.file == str(path)
    assert "not valid TOML" in problem.message
    assert "line 3, column 19" in problem.message
    assert "line 3, column 19" in problem.fix


def test_every_problem_in_every_file_is_reported_at_once(user_dir, session, tmp_path):
    user = write(user_dir / "config.toml", "[run]\nmax_workers = 0\nmax_attempt = 3\n")
    mine = write(session / "executor.toml", '[roles.coder]\nbackend = "nope"\nmodel = "nope"\n')
    broken = write(tmp_path / "broken.toml", "[budget\n")
    problems = rejected(session=session, explicit=broken)
    found = {(p.file, p.field) for p in problems}
    assert found == {
        (str(user), "run.max_workers"),
        (str(user), "run.max_attempt"),
        (str(mine), "roles.coder.backend"),
        (str(mine), "roles.coder.model"),
        (str(broken), None),
    }


def test_a_later_file_that_fixes_a_value_clears_the_earlier_problem(user_dir, session):
    write(user_dir / "config.toml", "[run]\nmax_workers = 0\n")
    write(session / "executor.toml", "[run]\nmax_workers = 8\n")
    assert load(session=session).run.max_workers == 8


def test_not_utf8_and_a_folder_in_place_of_a_file_are_reported(user_dir, tmp_path):
    (user_dir / "config.toml").write_bytes(b"[run]\nmax_workers = \xff\n")
    (problem,) = rejected()
    assert "not UTF-8" in problem.message
    (user_dir / "config.toml").unlink()
    (tmp_path / "dir.toml").mkdir()
    (problem,) = rejected(explicit=tmp_path / "dir.toml")
    assert problem.message == "not a file"


# --------------------------------------------------------------------------- seed JSON files


def git_project(tmp_path: Path) -> tuple[Path, Path]:
    project = tmp_path / "repo"
    (project / ".git").mkdir(parents=True)
    session = project / ".workflow" / "TC-1"
    session.mkdir(parents=True)
    return project, session


def test_seed_files_are_read_from_the_user_folder_and_the_projects_config_folder(user_dir, tmp_path):
    project, session = git_project(tmp_path)
    write(user_dir / "hydra_keys.json", hydra([{"provider": "anthropic", "key": ANTHROPIC_KEY, "tier": "premium"}]))
    write(
        project / "config" / "hydra_keys.json",
        hydra([{"provider": "openai", "key": OPENAI_KEY}], rotation_strategy="least_used"),
    )
    write(
        project / "config" / "notification.json", '{"telegram": {"enabled": true, "bot_token": "123:ABCDEFGHIJKLMN"}}'
    )
    write(
        project / "config" / "fleet_registry.json",
        '{"agents": [{"id": "network-001", "name": "Network Agent", "type": "infrastructure", "status": "online"}]}',
    )
    config = load(session=session)
    assert [(key.provider, key.tier, key.secret.reveal()) for key in config.key_files] == [
        ("anthropic", "PREMIUM", ANTHROPIC_KEY),
        ("openai", "STANDARD", OPENAI_KEY),
    ]
    assert config.keys.rotation == "least_used"
    assert config.notification == {"telegram": {"enabled": True, "bot_token": "123:ABCDEFGHIJKLMN"}}
    assert [agent.id for agent in config.fleet] == ["network-001"]
    assert str(project / "config" / "fleet_registry.json") in config.sources
    # an explicit project folder replaces the git root
    assert load(session=session, project_dir=tmp_path / "elsewhere").fleet == []


def test_keys_come_from_the_named_variables_then_from_files_each_once(user_dir):
    write(user_dir / "hydra_keys.json", hydra([{"provider": "anthropic", "key": ANTHROPIC_KEY}]))
    write(user_dir / "config.toml", '[keys.env]\nanthropic = ["FIRST", "SECOND", "UNSET"]\n')
    keys = load().collect_keys({"FIRST": ENV_KEY, "SECOND": ANTHROPIC_KEY, "UNSET": ""})
    assert [(key.origin, key.secret.reveal()) for key in keys] == [
        ("env:FIRST", ENV_KEY),
        ("env:SECOND", ANTHROPIC_KEY),
    ]


@pytest.mark.parametrize(
    ("name", "content", "field", "message"),
    [
        ("hydra_keys.json", '{"keys": [', None, "not valid JSON: Expecting value at line 1, column 11"),
        ("hydra_keys.json", "[]", None, "must be a JSON object"),
        ("hydra_keys.json", hydra([{"provider": "anthropic", "key": ANTHROPIC_KEY, "tier": "gold"}]),
         "keys[0].tier", "'GOLD'"),
        ("hydra_keys.json", hydra([{"provider": "anthropic"}]), "keys[0].key", "required key is missing"),
        ("hydra_keys.json", hydra([{"provider": "anthropic", "key": "short"}]), "keys[0].key", "at least 8"),
        ("hydra_keys.json", hydra([{"provider": "Anthropic!", "key": ANTHROPIC_KEY}]),
         "keys[0].provider", "lower-case"),
        ("hydra_keys.json", hydra([{"provider": "anthropic", "key": ANTHROPIC_KEY, "kye": 1}]),
         "keys[0].kye", "unknown key"),
        ("hydra_keys.json", hydra([], rotation_strategy="lru"), "rotation_strategy", "'lru' is not one of"),
        ("hydra_keys.json", hydra([], fallback=["GOLD"]), "fallback", "a backend name or a non-empty list of tiers"),
        ("notification.json", '"telegram"', None, "must be a JSON object"),
        ("notification.json", '{"telegram": true}', "telegram", "must be a JSON object"),
        ("notification.json", '{"discord": {"enabled": "yes"}}', "discord.enabled", "must be true or false"),
        ("fleet_registry.json", '{"agents": [{"id": "a", "name": "n", "type": "t"}]}', "agents[0].status", "required"),
        ("fleet_registry.json", '{"agents": {}}', "agents", "expected an array, found a table"),
    ],
)  # fmt: skip
def test_each_bad_seed_file_is_rejected_naming_the_file_and_the_field(user_dir, name, content, field, message):
    path = write(user_dir / name, content)
    problems = rejected()
    assert any(p.file == str(path) and p.field == field and message in p.message for p in problems), problems
    assert not any(ANTHROPIC_KEY in str(p) for p in problems)


def test_a_key_for_a_provider_no_model_uses_and_a_key_file_others_can_read_are_warnings(user_dir):
    path = write(user_dir / "hydra_keys.json", hydra([{"provider": "google-ai-pro", "key": ANTHROPIC_KEY}]))
    path.chmod(0o644)
    found = {(p.field, p.message, p.fix) for p in load().warnings if p.file == str(path)}
    assert found == {
        (
            "keys[0].provider",
            "no model in the registry has provider 'google-ai-pro'; this key will not be used",
            "did you mean 'google'? Otherwise choose one of: anthropic, google, openai",
        ),
        (None, "holds API keys and other users can read it", f"chmod 600 {path}"),
    }
    path.chmod(0o600)
    assert not [p for p in load().warnings if p.file == str(path) and "other users" in p.message]


# --------------------------------------------------------------------------- secrets never shown


def test_a_secret_shows_only_its_provider_and_last_four_characters():
    secret = Secret("anthropic", ANTHROPIC_KEY)
    assert repr(secret) == str(secret) == f"{secret}" == "anthropic…3f9a"
    assert secret.last4 == "3f9a"
    assert repr(Secret("openai", "short-key")) == "openai…"
    assert secret == Secret("anthropic", ANTHROPIC_KEY)
    assert len(secret.fingerprint) == 12
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    assert copy.deepcopy(secret) is secret


def test_no_key_appears_in_repr_dumps_or_the_redacted_dump(user_dir):
    write(user_dir / "hydra_keys.json", hydra([{"provider": "anthropic", "key": ANTHROPIC_KEY}]))
    notification = {"telegram": {"enabled": True, "bot_token": OPENAI_KEY}, "webhooks": {"urls": [ENV_KEY]}}
    write(user_dir / "notification.json", json.dumps(notification))
    config = load()
    environ = {"ANTHROPIC_API_KEY": ENV_KEY}
    dump = redacted_dump(config, environ)
    texts = [repr(config), str(config), str(config.model_dump()), config.model_dump_json(), json.dumps(dump)]
    texts += [repr(config.key_files), str(config.collect_keys(environ))]
    for text in texts:
        for secret in (ANTHROPIC_KEY, OPENAI_KEY, ENV_KEY, ANTHROPIC_KEY[4:-4]):
            assert secret not in text
    assert dump["key_files"][0]["secret"] == "anthropic…3f9a"
    assert dump["keys"]["env"]["anthropic"] == {"ANTHROPIC_API_KEY": "set (…k9P2)"}
    assert dump["keys"]["env"]["openai"] == {"OPENAI_API_KEY": "not set"}
    assert dump["notification"] == {
        "telegram": {"enabled": True, "bot_token": "…77Zq"},
        "webhooks": {"urls": ["…k9P2"]},
    }
    assert config.notification == notification  # the Notifier gets the values


def test_credentials_in_a_base_url_are_masked_in_the_dump(user_dir):
    model = MODEL.format(name="gw").replace('"openai"', '"openai-compatible"')
    write(user_dir / "config.toml", f'[[models]]\n{model}base_url = "https://me:{OPENAI_KEY}@gw.example/v1?key=abc"\n')
    dump = redacted_dump(load(), {})
    assert dump["models"][0]["base_url"] == "https://***@gw.example/v1?***"


# --------------------------------------------------------------------------- [mcp_servers]


def test_mcp_servers_load_with_their_defaults(user_dir):
    write(
        user_dir / "config.toml",
        '[mcp_servers.netops]\ncommand = ["netops-mcp", "--stdio"]\nenv = { NETOPS_TOKEN = "${NETOPS_TOKEN}" }\n'
        '[mcp_servers.dns]\nurl = "http://127.0.0.1:9000/mcp"\ntoken_env = "DNS_MCP_TOKEN"\n'
        'headers = { "X-Team" = "blue" }\nhealth_interval_s = 5\ntimeout_s = 10\n',
    )
    config = load()
    netops, dns = config.mcp_servers["netops"], config.mcp_servers["dns"]
    assert (netops.transport, netops.endpoint, netops.health_interval_s, netops.timeout_s) == (
        "stdio",
        "netops-mcp",
        30.0,
        60.0,
    )
    assert (dns.transport, dns.health_interval_s, dns.timeout_s) == ("http", 5.0, 10.0)
    assert netops.variables() == ["NETOPS_TOKEN"]
    assert dns.missing_variables({"DNS_MCP_TOKEN": "x"}) == []
    assert dns.missing_variables({}) == ["DNS_MCP_TOKEN"]
    assert load().mcp_servers == config.mcp_servers
    assert not [p for p in config.warnings if p.field and p.field.startswith("mcp_servers")]


@pytest.mark.parametrize(
    ("text", "field", "message", "fix"),
    [
        ("[mcp_servers.a]\ntimeout_s = 5\n", "mcp_servers.a", "needs either command or url", "command = ["),
        (
            '[mcp_servers.a]\ncommand = ["x"]\nurl = "http://h/mcp"\n',
            "mcp_servers.a",
            "either command or url, not both",
            "keep command",
        ),
        ("[mcp_servers.a]\ncommand = []\n", "mcp_servers.a.command", "names no program", 'command = ["'),
        ('[mcp_servers.a]\ncommand = "netops-mcp"\n', "mcp_servers.a.command", "expected an array", "["),
        ('[mcp_servers.a]\nurl = "ftp://h/mcp"\n', "mcp_servers.a.url", "http:// or https://", 'url = "http'),
        (
            '[mcp_servers.a]\nurl = "http://h/mcp"\nenv = { A = "1" }\n',
            "mcp_servers.a",
            "env applies to a command (stdio) server only",
            "headers",
        ),
        (
            '[mcp_servers.a]\ncommand = ["x"]\ntoken_env = "T"\n',
            "mcp_servers.a",
            "headers and token_env apply to a url server only",
            "env",
        ),
        (
            '[mcp_servers.a]\ncommand = ["x"]\nenv = { A = "${not a name}" }\n',
            "mcp_servers.a.env.A",
            "malformed ${...} reference",
            "${NETOPS_TOKEN}",
        ),
        ('[mcp_servers.a]\ncommand = ["x"]\nenv = { 1A = "x" }\n', "mcp_servers.a.env.1A", "variable name", "_"),
        (
            f'[mcp_servers.a]\nurl = "http://h/mcp"\ntoken_env = "{ANTHROPIC_KEY}"\n',
            "mcp_servers.a.token_env",
            "NAME of an environment variable",
            "variable's name",
        ),
        ('[mcp_servers."net ops"]\ncommand = ["x"]\n', 'mcp_servers."net ops"', "server name", "[mcp_servers."),
        ('[mcp_servers.a]\ncommand = ["x"]\ntimeout = 5\n', "mcp_servers.a.timeout", "unknown key", "timeout_s"),
        ('[mcp_servers.a]\ncommand = ["x"]\nhealth_interval_s = 0\n', "mcp_servers.a.health_interval_s", "more", ""),
        ("mcp_servers = 3\n", "mcp_servers", "expected a table", "[name]"),
    ],
)
def test_each_bad_mcp_server_entry_is_rejected_naming_the_file_the_key_and_the_fix(user_dir, text, field, message, fix):
    path = write(user_dir / "config.toml", text)
    problems = rejected()
    assert any(p.file == str(path) and p.field == field and message in p.message and fix in p.fix for p in problems), (
        problems
    )
    assert not any(ANTHROPIC_KEY in str(p) for p in problems)


def test_a_secret_written_into_an_mcp_servers_env_or_headers_is_a_warning_and_never_shown(user_dir):
    path = write(
        user_dir / "config.toml",
        f'[mcp_servers.a]\ncommand = ["x"]\nenv = {{ API_KEY = "{OPENAI_KEY}", MODE = "prod" }}\n'
        f'[mcp_servers.b]\nurl = "https://me:{ANTHROPIC_KEY}@mcp.example/mcp?token=abc"\n'
        'headers = { Authorization = "Bearer ${B_TOKEN}", "X-Api-Key" = "literal-value-123" }\n',
    )
    config = load()
    warned = {(p.field, p.message) for p in config.warnings if p.file == str(path)}
    assert warned == {
        ("mcp_servers.a.env.API_KEY", "looks like a secret written into the config file"),
        ("mcp_servers.b.headers.X-Api-Key", "looks like a secret written into the config file"),
    }
    dump = redacted_dump(config, {})
    assert dump["mcp_servers"]["a"]["env"] == {"API_KEY": "…", "MODE": "…"}
    assert dump["mcp_servers"]["b"]["headers"] == {"Authorization": "…${B_TOKEN}", "X-Api-Key": "…"}
    assert dump["mcp_servers"]["b"]["url"] == "https://***@mcp.example/mcp?***"
    text = json.dumps(dump) + repr(config) + str(config.warnings)
    for secret in (OPENAI_KEY, ANTHROPIC_KEY, "literal-value-123", "abc"):
        assert secret not in text
    assert config.mcp_servers["a"].env["API_KEY"] == OPENAI_KEY  # the server still gets it


# --------------------------------------------------------------------------- the command line


def test_config_check_prints_the_effective_config_and_exits_0(executor_cli, user_dir, session):
    write(user_dir / "hydra_keys.json", hydra([{"provider": "anthropic", "key": ANTHROPIC_KEY}]))
    write(session / "executor.toml", "[run]\nmax_workers = 7\n")
    env = {"TEAM_EXECUTOR_CONFIG_DIR": str(user_dir), "ANTHROPIC_API_KEY": ENV_KEY}
    text = executor_cli("config", "check", "--session", str(session), env=env)
    assert text.returncode == 0, text.stderr
    assert "max_workers = 7" in text.stdout
    assert 'ANTHROPIC_API_KEY = "set (…k9P2)"' in text.stdout
    assert "anthropic…3f9a" in text.stdout
    as_json = executor_cli("config", "check", "--session", str(session), "--json", env=env)
    assert as_json.returncode == 0
    body = json.loads(as_json.stdout)
    assert body["valid"] is True
    assert body["config"]["run"]["max_workers"] == 7
    assert body["config"]["sources"][-1] == str(session / "executor.toml")
    for output in (text.stdout, text.stderr, as_json.stdout, as_json.stderr):
        assert ANTHROPIC_KEY not in output
        assert ENV_KEY not in output


def test_config_check_lists_every_problem_and_exits_1(executor_cli, user_dir, tmp_path):
    write(user_dir / "hydra_keys.json", hydra([{"provider": "anthropic", "key": ANTHROPIC_KEY, "tier": "gold"}]))
    bad = write(tmp_path / "bad.toml", '[run]\nmax_workers = "many"\n[roles.coder]\nbackend = "claud"\n')
    env = {"TEAM_EXECUTOR_CONFIG_DIR": str(user_dir)}
    text = executor_cli("config", "check", "--config", str(bad), env=env)
    assert text.returncode == 1
    assert f"{bad}: run.max_workers: expected an integer, found a string. Fix:" in text.stdout
    assert f"{bad}: roles.coder.backend: unknown backend 'claud'. Fix: did you mean 'claude'?" in text.stdout
    assert "hydra_keys.json: keys[0].tier" in text.stdout
    as_json = executor_cli("config", "check", "--config", str(bad), "--json", env=env)
    assert as_json.returncode == 1
    body = json.loads(as_json.stdout)
    assert body["valid"] is False
    assert body["config"] is None
    assert {p["field"] for p in body["problems"] if p["severity"] == "error"} == {
        "run.max_workers",
        "roles.coder.backend",
        "keys[0].tier",
    }
    for output in (text.stdout, text.stderr, as_json.stdout):
        assert ANTHROPIC_KEY not in output
        assert "Traceback" not in output


def test_config_check_shows_mcp_servers_without_their_secrets(executor_cli, user_dir, session):
    write(
        session / "executor.toml",
        '[mcp_servers.netops]\ncommand = ["netops-mcp"]\n'
        f'env = {{ TOKEN = "${{NETOPS_TOKEN}}", KEY = "{OPENAI_KEY}" }}\n'
        f'[mcp_servers.dns]\nurl = "https://bot:{ANTHROPIC_KEY}@dns.example/mcp"\ntoken_env = "DNS_TOKEN"\n',
    )
    env = {"TEAM_EXECUTOR_CONFIG_DIR": str(user_dir), "NETOPS_TOKEN": ENV_KEY}
    text = executor_cli("config", "check", "--session", str(session), env=env)
    assert text.returncode == 0, text.stderr
    assert "[mcp_servers.netops]" in text.stdout
    assert '[mcp_servers.netops.env]\nTOKEN = "${NETOPS_TOKEN}"\nKEY = "…"\n' in text.stdout
    assert 'url = "https://***@dns.example/mcp"' in text.stdout
    assert "mcp_servers.netops.env.KEY: looks like a secret written into the config file" in text.stdout
    for secret in (OPENAI_KEY, ANTHROPIC_KEY, ENV_KEY):
        assert secret not in text.stdout + text.stderr


def test_config_check_usage_errors_exit_2(executor_cli, user_dir, tmp_path):
    env = {"TEAM_EXECUTOR_CONFIG_DIR": str(user_dir)}
    missing = executor_cli("config", "check", "--config", str(tmp_path / "nope.toml"), env=env)
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr
    # A missing session is not a usage error: 1, as on every command that takes --session.
    assert executor_cli("config", "check", "--session", str(tmp_path / "nowhere"), env=env).returncode == 1
    assert executor_cli("config", "check", "--bogus", env=env).returncode == 2


# --------------------------------------------------------------------------- no input makes the loader raise

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

toml_fragments = st.sampled_from(
    [
        "[run]", "[roles.coder]", "[[models]]", "[router]", "[keys]", "[keys.env]", "[budget]", "[run", "]]",
        "max_workers = 4", 'max_workers = "4"', "max_workers = -1", "max_workers = 1e400", "default_backend = ",
        'backend = "claude"', 'model = "gpt-5"', 'tier = "gold"', 'name = "a"', 'provider = "openai"',
        "input_per_mtok = 1.0", "output_per_mtok = 1.0", "context_window = 9", 'fallback = ["FREE", 3]',
        'anthropic = ["A_KEY"]', "warn_at = 2", "x = 1979-05-27T07:32:00Z", "y = [[1], {a = 1}]", '"\\u00"',
        "a.b.c = 1", "= 1", 'k = """', "run = 1", "roles = []", "models = {}", "z = 99999999999999999999",
    ]
)  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def assert_loads_or_reports(files: dict[str, bytes]) -> None:
    root = Path(tempfile.mkdtemp(prefix="cfg-fuzz-"))
    try:
        for name, data in files.items():
            (root / name).write_bytes(data)
        config, problems = inspect_config(known_backends=BACKENDS, user_dir=root)
        if config is None:
            errors = [p for p in problems if p.severity == "error"]
            assert errors
            assert all(p.file and p.message and p.fix for p in errors)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@FUZZ
@given(data=st.binary(max_size=2000))
def test_random_bytes_as_config_toml_are_reported_not_raised(data):
    assert_loads_or_reports({"config.toml": data})


@FUZZ
@given(lines=st.lists(toml_fragments, max_size=12))
def test_random_toml_ish_text_is_reported_not_raised(lines):
    assert_loads_or_reports({"config.toml": "\n".join(lines).encode()})


@FUZZ
@given(value=json_values, name=st.sampled_from(["hydra_keys.json", "notification.json", "fleet_registry.json"]))
def test_random_json_in_a_seed_file_is_reported_not_raised(value, name):
    assert_loads_or_reports({name: json.dumps(value).encode()})


@FUZZ
@given(
    keys=st.lists(
        st.dictionaries(st.sampled_from(["provider", "key", "tier", "x"]), json_values, max_size=4), max_size=3
    )
)
def test_random_hydra_key_entries_are_reported_not_raised(keys):
    assert_loads_or_reports({"hydra_keys.json": json.dumps({"keys": keys}).encode()})


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("config.toml", "a" + ".a" * 5000 + " = 1\n"),
        ("config.toml", "[roles" + ".a" * 3000 + "]\nx = 1\n"),
        ("config.toml", "[run]\nx = " + "[" * 3000 + "]" * 3000 + "\n"),
        ("notification.json", '{"a": ' * 3000 + "1" + "}" * 3000),
    ],
)
def test_absurdly_deep_nesting_is_reported_not_raised(user_dir, name, text):
    path = write(user_dir / name, text)
    (problem,) = rejected()
    assert problem.file == str(path)


def test_the_user_folder_comes_from_the_environment(user_dir):
    assert os.environ["TEAM_EXECUTOR_CONFIG_DIR"] == str(user_dir)
    write(user_dir / "config.toml", "[run]\nmax_workers = 9\n")
    assert load().run.max_workers == 9
