"""The shape of the configuration: its tables, the built-in model registry, the loaded Config.

Everything a user writes is validated here with ``extra="forbid"`` and strict
types, so a misspelt key or a quoted number is an error, never silently ignored.
The models only check what one value can check (types, ranges, allowed words);
references between parts of the config (a role's model must be in the
registry, a backend must exist) are checked by :mod:`session.config`, which
also merges the files and turns every error into a :class:`~session.problems.Problem`.

Key *values* never appear in the TOML schema: ``[keys.env]`` names environment
variables.  Keys read from a seed ``hydra_keys.json`` live in :class:`Secret`,
whose ``repr``/``str``/serialised form is ``provider…last4``.

The field vocabulary is in :mod:`session.config_fields`, keys in :mod:`session.secret`,
the ``[notify]`` and ``[mcp_servers]`` tables in :mod:`session.config_notify` and
:mod:`session.config_mcp`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from session.config_fields import (
    DEFAULT_FALLBACK,
    PROVIDERS,
    TIERS,
    EnvName,
    Permission,
    Provider,
    Rotation,
    StrictModel,
    Tier,
    http_url,
)
from session.config_mcp import McpServerConfig, McpServerName
from session.config_notify import NotifySettings
from session.problems import Problem
from session.redaction import is_secret_name, mask
from session.secret import ApiKey, Secret

__all__ = [
    "DEFAULT_KEY_ENV",
    "DEFAULT_MODELS",
    "BudgetSettings",
    "ClusterSettings",
    "Config",
    "FleetAgent",
    "FleetFile",
    "HydraKeyEntry",
    "HydraKeysFile",
    "KeysSettings",
    "ModelSpec",
    "RememberedSettings",
    "RoleDefaults",
    "RouterSettings",
    "RunSettings",
    "Settings",
]

_SEED_PROVIDER = re.compile(r"[a-z0-9][a-z0-9._-]*")


# --------------------------------------------------------------------------- [run]


class RunSettings(StrictModel):
    """``[run]``: how a run dispatches work.  Command-line flags override these."""

    max_workers: int = Field(4, ge=1)
    """Workers running at once."""
    default_backend: str | None = Field(None, min_length=1)
    """Backend for roles whose role-spec and ``[roles.X]`` name none (a name from ``executor probe``)."""
    max_attempts: int = Field(3, ge=1)
    """Attempts per task before it is marked failed."""
    retry_backoff_s: float = Field(2.0, ge=0)
    """First delay before a retry, in seconds; it doubles with each attempt."""
    shutdown_grace_s: float = Field(10.0, ge=0)
    """Seconds running workers get to finish on Ctrl-C/SIGTERM before they are stopped."""
    agent_nice: int = Field(5, ge=0, le=19)
    """Scheduling niceness of every agent process (0: as the executor's own).  When the machine
    is busy, agents yield the CPU to the executor, its MCP bridge and your shell; when it is
    idle they run at full speed all the same."""
    gate_env: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*\*?$")]] = Field(default_factory=list)
    """Variables of the executor's environment the quality gates get besides the agents'
    allowlist (a name, or a prefix ending in ``*``), e.g. ``["DATABASE_URL", "JAVA_HOME"]``.
    Only from your config folder or ``--config``: the session's ``executor.toml`` is within
    the agents' reach."""


# --------------------------------------------------------------------------- [remembered]


class RememberedSettings(StrictModel):
    """``[remembered]``: what an earlier ``executor run``/``resume``/``mcp`` was told, kept in the
    session's ``executor.toml`` by the executor itself so the next command runs the same way.

    Precedence of a role's backend, strongest first: ``--backend`` given now, this
    ``backend``, the role-spec's ``backend:``, ``[roles.<role>].backend``, ``[run].default_backend``.
    """

    backend: str | None = Field(None, min_length=1)
    """The backend every role ran on, from ``--backend``; a new ``--backend`` replaces it."""


# --------------------------------------------------------------------------- [roles.<role>]


class RoleDefaults(StrictModel):
    """``[roles.<role>]``: defaults for one role, used where its role-spec says nothing."""

    backend: str | None = Field(None, min_length=1)
    """Backend that runs the role's tasks."""
    model: str | None = Field(None, min_length=1)
    """A model from ``[[models]]``."""
    tier: Tier | None = None
    """Tier the router starts from when no model is named."""
    skills: list[str] | None = None
    """Skills injected into the prompt (``[]`` means none); see ``session.skills``."""
    permission: Permission | None = None
    """What the agent may touch: read-only, workspace-write or full."""
    timeout: float | None = Field(None, gt=0)
    """Wall-clock seconds one attempt may run."""
    max_turns: int | None = Field(None, ge=1)
    """Agent turns per attempt, for backends that support a limit."""
    stall_after: float | None = Field(None, gt=0)
    """Seconds without progress or output before the task is reported stalled (default 1800)."""
    stall_stop_after: float | None = Field(None, gt=0)
    """Seconds without progress or output before the attempt is stopped and retried (default 3600)."""


# --------------------------------------------------------------------------- [[models]]


class ModelSpec(StrictModel):
    """One ``[[models]]`` entry of the model registry."""

    name: str = Field(min_length=1)
    """The model id sent to the backend; unique in the registry."""
    provider: Provider
    """Whose API serves it; decides which keys (``[keys.env]``) it uses."""
    backend: str = Field(min_length=1)
    """The backend that runs it (claude, codex, gemini, openai, ...)."""
    tier: Tier
    """FREE, STANDARD, PREMIUM or CRITICAL."""
    input_per_mtok: float = Field(ge=0)
    """USD per 1M input tokens."""
    output_per_mtok: float = Field(ge=0)
    """USD per 1M output tokens."""
    cached_per_mtok: float | None = Field(None, ge=0)
    """USD per 1M cached input tokens; unset means the input price."""
    context_window: int = Field(gt=0)
    """Tokens the model accepts in one request."""
    base_url: str | None = None
    """Endpoint of an OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1."""

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return http_url(value, 'base_url = "http://127.0.0.1:8080/v1"')

    @model_validator(mode="after")
    def _compatible_needs_url(self) -> ModelSpec:
        if self.provider == "openai-compatible" and self.base_url is None:
            raise PydanticCustomError(
                "base_url_missing",
                "an openai-compatible model needs base_url",
                {"fix": 'add base_url = "http://HOST:PORT/v1" (the server\'s OpenAI-compatible endpoint)'},
            )
        return self

    def cost(self, tokens_in: int, tokens_out: int, tokens_cached: int = 0) -> float:
        """USD for one call; ``tokens_in`` includes the cached tokens, as providers count them."""
        cached_price = self.input_per_mtok if self.cached_per_mtok is None else self.cached_per_mtok
        fresh = max(0, tokens_in - tokens_cached)
        total = fresh * self.input_per_mtok + tokens_cached * cached_price + tokens_out * self.output_per_mtok
        return round(total / 1_000_000, 6)


def _model(
    name: str, provider: str, backend: str, tier: str, prices: tuple[float, float, float], window: int, **extra: Any
) -> dict[str, Any]:
    inp, out, cached = prices
    return {
        "name": name, "provider": provider, "backend": backend, "tier": tier,
        "input_per_mtok": inp, "output_per_mtok": out, "cached_per_mtok": cached,
        "context_window": window, **extra,
    }  # fmt: skip


#: The built-in registry (list prices in USD per 1M tokens: input, output, cached input).
#: Names are ids the providers' APIs and CLIs accept.  No entry has a ``base_url``: a key is
#: only ever sent to an endpoint the user configured or to its vendor's own (see
#: :func:`session.routing_chain.key_endpoint`); a local server is the user's own ``[[models]]`` entry.
DEFAULT_MODELS: tuple[Mapping[str, Any], ...] = (
    _model("claude-opus-4-1", "anthropic", "claude", "CRITICAL", (15.0, 75.0, 1.5), 200_000),
    _model("claude-sonnet-4-5", "anthropic", "claude", "PREMIUM", (3.0, 15.0, 0.3), 200_000),
    _model("gpt-5", "openai", "codex", "PREMIUM", (1.25, 10.0, 0.125), 400_000),
    _model("gemini-2.5-pro", "google", "gemini", "PREMIUM", (1.25, 10.0, 0.31), 1_048_576),
    _model("gpt-5-mini", "openai", "codex", "STANDARD", (0.25, 2.0, 0.025), 400_000),
    _model("gemini-2.5-flash", "google", "gemini", "STANDARD", (0.3, 2.5, 0.075), 1_048_576),
    _model("claude-haiku-4-5", "anthropic", "claude", "STANDARD", (1.0, 5.0, 0.1), 200_000),
)  # fmt: skip


# --------------------------------------------------------------------------- [router] [keys] [budget]


class RouterSettings(StrictModel):
    """``[router]``: how the router picks a model and falls back."""

    fallback: list[Tier] = Field(default_factory=lambda: list(DEFAULT_FALLBACK), min_length=1)
    """Tiers to try in order when a model is unavailable (503/529, no capacity, repeated network errors)."""
    critical_needs_approval: bool = True
    """A CRITICAL model is used only after the user approves; until then, the next tier down."""
    network_retries: int = Field(3, ge=0)
    """Retries (with backoff) of a network error before moving to the next tier."""
    fallback_backend: str | None = Field(None, min_length=1)
    """A backend to hand the task to when the whole chain is exhausted (a string ``fallback`` in hydra_keys.json)."""

    @field_validator("fallback")
    @classmethod
    def _each_once(cls, tiers: list[str]) -> list[str]:
        repeated = sorted({tier for tier in tiers if tiers.count(tier) > 1})
        if repeated:
            raise PydanticCustomError(
                "duplicate_tier",
                "names {tiers} more than once",
                {"tiers": ", ".join(repeated), "fix": "name each tier once, most capable first"},
            )
        return tiers


#: Where keys come from by default: the variables each provider's own tools read.
DEFAULT_KEY_ENV: Mapping[str, tuple[str, ...]] = {
    "anthropic": ("ANTHROPIC_API_KEY",),
    "openai": ("OPENAI_API_KEY",),
    "google": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
}


class KeysSettings(StrictModel):
    """``[keys]``: the key pool.  Key values are never written here, only variable names."""

    rotation: Rotation = "round_robin"
    """How the next key of a provider is chosen: round_robin, random or least_used."""
    cooldown_s: float = Field(30.0, ge=0)
    """Seconds a key rests after a 429 that gives no Retry-After."""
    env: dict[Provider, list[EnvName]] = Field(default_factory=dict)
    """Provider -> names of the environment variables that hold its keys, in order."""


class BudgetSettings(StrictModel):
    """``[budget]``: spending limits in USD (reported cost, else computed from ``[[models]]`` prices)."""

    session_usd: float | None = Field(None, gt=0)
    """Most the whole session may spend; at the limit no new task is dispatched.  Unset: no limit."""
    task_usd: float | None = Field(None, gt=0)
    """Most one task may spend over all its attempts.  Unset: no limit."""
    warn_at: float = Field(0.8, gt=0, le=1)
    """Fraction of a budget at which a warning event is sent."""


class ClusterSettings(StrictModel):
    """``[cluster]``: run each attempt as a Ray actor on a cluster (``team-executor[ray]``)."""

    address: str | None = Field(None, min_length=1)
    """``auto``, ``ray://host:10001`` or a local address; unset: attempts run in this process."""
    resources: dict[str, dict[str, float]] = Field(default_factory=dict)
    """Role -> the custom Ray resources (node labels) its attempts require, e.g. ``{"gpu-box" = 1}``."""
    num_cpus: float = Field(0.0, ge=0)
    """CPUs each attempt's actor reserves; agents mostly wait on the network."""
    shared_filesystem: bool = True
    """Whether every node sees the project and session folders at the same paths; false: each
    attempt gets the project by git (a bundle of its branch) and sends its branch back."""


# --------------------------------------------------------------------------- the file, and the loaded config


class Settings(StrictModel):
    """One TOML configuration file (every table optional)."""

    run: RunSettings = Field(default_factory=RunSettings)
    remembered: RememberedSettings = Field(default_factory=RememberedSettings)
    roles: dict[str, RoleDefaults] = Field(default_factory=dict)
    models: list[ModelSpec] = Field(default_factory=list)
    router: RouterSettings = Field(default_factory=RouterSettings)
    keys: KeysSettings = Field(default_factory=KeysSettings)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    mcp_servers: dict[McpServerName, McpServerConfig] = Field(default_factory=dict)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)


def _mask_mapping(value: Any, secret: bool = False) -> Any:
    """A copy of a JSON value with every string at or under a secret-looking key masked."""
    if isinstance(value, dict):
        # A URL may carry a token in its path or query (webhooks do): shown masked too.
        return {
            key: _mask_mapping(item, secret or is_secret_name(key) or "url" in key.lower())
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_mask_mapping(item, secret) for item in value]
    return mask(value) if secret and isinstance(value, str) else value


class FleetAgent(StrictModel):
    """One agent of a seed ``fleet_registry.json``."""

    id: str = Field(min_length=1)
    name: str
    type: str
    status: str
    last_step: str | None = None


class Config(Settings):
    """The effective configuration: the merged TOML files plus what the seed JSON files add.

    Built by :func:`session.config.load_config`; not written by users.
    ``notification`` (for the Notifier) is kept as read, but masked in ``repr`` and dumps.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    key_files: list[ApiKey] = Field(default_factory=list)
    """Keys read from hydra_keys.json files."""
    notification: dict[str, Any] | None = Field(None, repr=False)
    """notification.json as read (it may hold bot tokens: masked when dumped)."""
    notify_secrets: dict[str, Secret] = Field(default_factory=dict)
    """Secrets written literally in notification.json, by channel (``telegram``: the bot token,
    ``discord``: the webhook URL); a variable named in ``[notify]`` wins over them."""
    fleet: list[FleetAgent] = Field(default_factory=list)
    """fleet_registry.json's agents."""
    sources: list[str] = Field(default_factory=list)
    """Every file that contributed, lowest precedence first."""
    warnings: list[Problem] = Field(default_factory=list, exclude=True, repr=False)
    """Problems of severity ``warning`` found while loading."""

    @field_serializer("notification")
    def _masked(self, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _mask_mapping(value) if value is not None else None

    def find_model(self, name: str) -> ModelSpec | None:
        """The registry entry for ``name``: an exact match, else the longest registered name
        that prefixes it (``claude-sonnet-4-5-20250929`` finds ``claude-sonnet-4-5``).
        A ``provider/`` prefix is ignored.  ``None`` when nothing matches.
        """
        wanted = name.lower().rsplit("/", 1)[-1]
        best: ModelSpec | None = None
        for model in self.models:
            registered = model.name.lower()
            if registered == name.lower() or registered == wanted:
                return model
            if wanted.startswith(registered) and (best is None or len(registered) > len(best.name)):
                best = model
        return best

    def models_in_tier(self, tier: str) -> list[ModelSpec]:
        """The registry's models of ``tier``, in registry order."""
        return [model for model in self.models if model.tier == tier.upper()]

    def role(self, name: str) -> RoleDefaults:
        """``[roles.<name>]``, or empty defaults when the config says nothing about the role."""
        return self.roles.get(name) or RoleDefaults()

    def role_skills(self) -> dict[str, list[str]]:
        """Role -> skills, for ``session.skills.skills_for_role``'s ``config_map``."""
        return {name: list(role.skills) for name, role in self.roles.items() if role.skills is not None}

    def estimate_cost(self, model: str, tokens_in: int, tokens_out: int, tokens_cached: int = 0) -> float | None:
        """USD for one call of ``model`` at registry prices, or ``None`` for a model not in the registry."""
        spec = self.find_model(model)
        return None if spec is None else spec.cost(tokens_in, tokens_out, tokens_cached)

    def collect_keys(self, environ: Mapping[str, str]) -> list[ApiKey]:
        """Every key available now: those of ``[keys.env]``'s variables that are set (in
        order), then those of hydra_keys.json files; a key found twice is kept once.
        """
        keys: list[ApiKey] = []
        seen: set[Secret] = set()
        for provider, names in self.keys.env.items():
            for name in names:
                value = environ.get(name, "").strip()
                if value:
                    secret = Secret(provider, value)
                    if secret not in seen:
                        seen.add(secret)
                        keys.append(ApiKey(provider=provider, secret=secret, origin=f"env:{name}"))
        for key in self.key_files:
            if key.secret not in seen:
                seen.add(key.secret)
                keys.append(key)
        return keys


# --------------------------------------------------------------------------- seed JSON files


class HydraKeyEntry(StrictModel):
    """One entry of ``keys[]`` in a seed hydra_keys.json."""

    provider: str = Field(min_length=1)
    key: str = Field(min_length=8, repr=False)
    tier: Tier = "STANDARD"
    # Bookkeeping written by the tool that seeds this file; accepted and not used.
    usage_count: int | None = Field(None, ge=0)
    last_used: str | None = None
    rate_limited_until: str | None = None

    @field_validator("provider")
    @classmethod
    def _provider_word(cls, value: str) -> str:
        if not _SEED_PROVIDER.fullmatch(value):
            raise PydanticCustomError(
                "provider_word",
                "must be a lower-case provider name (letters, digits, '.', '_', '-')",
                {"fix": f"use one of: {', '.join(PROVIDERS)}"},
            )
        return value

    @field_validator("key")
    @classmethod
    def _no_blanks(cls, value: str) -> str:
        if value != value.strip() or any(char.isspace() for char in value):
            raise PydanticCustomError(
                "key_blank", "contains white space", {"fix": "paste the key again without spaces or line breaks"}
            )
        return value


def _seed_fallback(value: Any) -> Any:
    """A seed's ``fallback``: a list of tiers (normalised to upper case) or one backend name."""
    if value is None:
        return None
    if isinstance(value, str) and value:
        return value
    if isinstance(value, list) and value and all(isinstance(item, str) and item.upper() in TIERS for item in value):
        return [item.upper() for item in value]
    raise PydanticCustomError(
        "seed_fallback",
        "must be a backend name or a non-empty list of tiers",
        {"fix": f'write e.g. "fallback": "opencode" or "fallback": {list(DEFAULT_FALLBACK)}'.replace("'", '"')},
    )


class HydraKeysFile(StrictModel):
    """A seed ``hydra_keys.json``: ``keys[] {provider, key, tier}``, ``rotation_strategy``, ``fallback``."""

    keys: list[HydraKeyEntry] = Field(default_factory=list)
    rotation_strategy: Rotation | None = None
    fallback: Annotated[Any, BeforeValidator(_seed_fallback)] = None
    last_updated: str | None = None


class FleetFile(StrictModel):
    """A seed ``fleet_registry.json``: ``agents[] {id, name, type, status}``."""

    agents: list[FleetAgent] = Field(default_factory=list)
