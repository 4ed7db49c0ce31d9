"""The shape of the configuration: pydantic models, the built-in registry, secrets.

Everything a user writes is validated here with ``extra="forbid"`` and strict
types, so a misspelt key or a quoted number is an error, never silently ignored.
The models only check what one value can check (types, ranges, allowed words);
references between parts of the config (a role's model must be in the
registry, a backend must exist) are checked by :mod:`session.config`, which
also merges the files and turns every error into a :class:`~session.problems.Problem`.

Key *values* never appear in the TOML schema: ``[keys.env]`` names environment
variables.  Keys read from a seed ``hydra_keys.json`` live in :class:`Secret`,
whose ``repr``/``str``/serialised form is ``provider…last4``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    PlainValidator,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema

from protocol.notify import NOTICE_KINDS, NoticeKind
from session.problems import Problem
from session.redaction import mask, register_secret

__all__ = [
    "DEFAULT_FALLBACK",
    "DEFAULT_KEY_ENV",
    "DEFAULT_MODELS",
    "ENV_REFERENCE",
    "PROVIDERS",
    "TIERS",
    "ApiKey",
    "AppriseSettings",
    "BudgetSettings",
    "ChatId",
    "Config",
    "DiscordSettings",
    "FleetAgent",
    "FleetFile",
    "HydraKeyEntry",
    "HydraKeysFile",
    "KeysSettings",
    "McpServerConfig",
    "ModelSpec",
    "NotifySettings",
    "Permission",
    "Provider",
    "RememberedSettings",
    "RoleDefaults",
    "Rotation",
    "RouterSettings",
    "RunSettings",
    "Secret",
    "Settings",
    "TelegramSettings",
    "Tier",
    "WebhookSettings",
    "env_references",
    "redact_url",
    "without_references",
]

# --------------------------------------------------------------------------- vocabulary

TierName = Literal["FREE", "STANDARD", "PREMIUM", "CRITICAL"]
#: Providers a ``[[models]]`` entry and ``[keys.env]`` may name.  ``openai-compatible``
#: is any server speaking the OpenAI chat-completions API (llama.cpp, vLLM, Ollama, gateways).
Provider = Literal[
    "anthropic", "openai", "google", "openai-compatible", "mistral", "deepseek", "qwen", "xai", "openrouter"
]
Permission = Literal["read-only", "workspace-write", "full"]
Rotation = Literal["round_robin", "random", "least_used"]

#: Model tiers, cheapest first.
TIERS: tuple[str, ...] = get_args(TierName)
PROVIDERS: tuple[str, ...] = get_args(Provider)
DEFAULT_FALLBACK: tuple[TierName, ...] = ("CRITICAL", "PREMIUM", "STANDARD", "FREE")

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SEED_PROVIDER = re.compile(r"[a-z0-9][a-z0-9._-]*")


def _http_url(value: str | None, example: str) -> str | None:
    """``value`` when it is an http(s) URL with a host (or unset); the error's fix shows ``example``."""
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise PydanticCustomError(
            "url", "must be an http:// or https:// URL with a host", {"fix": f"write it like {example}"}
        )
    return value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


#: A tier name; written in any case (``premium`` and ``PREMIUM`` are the same), stored upper case.
Tier = Annotated[TierName, BeforeValidator(_upper)]


def _env_name_check(never: str, secret: str, example: str) -> Callable[[str], str]:
    """A validator of a variable NAME; its message says what must never be written instead."""

    def check(value: str) -> str:
        # Never echo the value: someone may have pasted a key here instead of a variable name.
        if not _ENV_NAME.fullmatch(value):
            raise PydanticCustomError(
                "env_name",
                f"must be the NAME of an environment variable (letters, digits and _), never {never} itself",
                {
                    "fix": f"put the {secret} in an environment variable and write that variable's name here, "
                    f"e.g. {example}"
                },
            )
        return value

    return check


EnvName = Annotated[str, AfterValidator(_env_name_check("a key", "key", "ANTHROPIC_API_KEY"))]

#: The name of a variable that holds a channel's secret (a bot token, a webhook URL, headers).
SecretEnvName = Annotated[str, AfterValidator(_env_name_check("a token or URL", "secret", "TELEGRAM_BOT_TOKEN"))]


def redact_url(url: str) -> str:
    """``url`` without credentials: user:password and the query string are masked."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    if "@" in host:
        host = "***@" + host.rsplit("@", 1)[1]
    path = re.sub(r"\?.*$", "?***", path)
    return f"{scheme}{sep}{host}{slash}{path}"


class _Strict(BaseModel):
    """Base of every user-written section: unknown keys and loose types are errors; values are frozen."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --------------------------------------------------------------------------- secrets


class Secret:
    """An API key.  Shown only as ``provider…last4`` (``anthropic…3f9a``): in ``repr``,
    ``str``, f-strings, and when a model holding it is dumped or serialised.

    :meth:`reveal` is the one way to the value; call it where the key is handed to
    a backend, and nowhere else.  Equality compares values in constant time.
    """

    __slots__ = ("_value", "provider")

    def __init__(self, provider: str, value: str) -> None:
        self.provider = provider
        self._value = value
        register_secret(value)  # whatever prints it from now on masks it

    def reveal(self) -> str:
        """The key itself."""
        return self._value

    @property
    def last4(self) -> str:
        """The last 4 characters, or ``""`` for a key too short to show any."""
        return mask(self._value)[1:]

    @property
    def fingerprint(self) -> str:
        """A stable, non-reversible id for this key (12 hex digits of its SHA-256): for usage tables."""
        return hashlib.sha256(self._value.encode()).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"{self.provider}{mask(self._value)}"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return self.provider == other.provider and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash((self.provider, self._value))

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __reduce__(self) -> Any:
        # Pickling would carry the value; nothing of ours needs to pickle a key.
        raise TypeError("a Secret is not picklable")

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.is_instance_schema(
            cls, serialization=core_schema.plain_serializer_function_ser_schema(repr, when_used="always")
        )


class ApiKey(BaseModel):
    """One usable key: its provider, the key (a :class:`Secret`), its tier when known, and where it came from.

    ``origin`` is ``env:NAME`` for a key read from an environment variable, or the
    path of the ``hydra_keys.json`` that holds it.
    """

    model_config = ConfigDict(frozen=True)

    provider: str
    secret: Secret
    tier: Tier | None = None
    origin: str


# --------------------------------------------------------------------------- [run]


class RunSettings(_Strict):
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


# --------------------------------------------------------------------------- [remembered]


class RememberedSettings(_Strict):
    """``[remembered]``: what an earlier ``executor run``/``resume``/``mcp`` was told, kept in the
    session's ``executor.toml`` by the executor itself so the next command runs the same way.

    Precedence of a role's backend, strongest first: ``--backend`` given now, this
    ``backend``, the role-spec's ``backend:``, ``[roles.<role>].backend``, ``[run].default_backend``.
    """

    backend: str | None = Field(None, min_length=1)
    """The backend every role ran on, from ``--backend``; a new ``--backend`` replaces it."""


# --------------------------------------------------------------------------- [roles.<role>]


class RoleDefaults(_Strict):
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


class ModelSpec(_Strict):
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
        return _http_url(value, 'base_url = "http://127.0.0.1:8080/v1"')

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
#: :func:`session.routing.key_endpoint`); a local server is the user's own ``[[models]]`` entry.
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


class RouterSettings(_Strict):
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


class KeysSettings(_Strict):
    """``[keys]``: the key pool.  Key values are never written here, only variable names."""

    rotation: Rotation = "round_robin"
    """How the next key of a provider is chosen: round_robin, random or least_used."""
    cooldown_s: float = Field(30.0, ge=0)
    """Seconds a key rests after a 429 that gives no Retry-After."""
    env: dict[Provider, list[EnvName]] = Field(default_factory=dict)
    """Provider -> names of the environment variables that hold its keys, in order."""


class BudgetSettings(_Strict):
    """``[budget]``: spending limits in USD (reported cost, else computed from ``[[models]]`` prices)."""

    session_usd: float | None = Field(None, gt=0)
    """Most the whole session may spend; at the limit no new task is dispatched.  Unset: no limit."""
    task_usd: float | None = Field(None, gt=0)
    """Most one task may spend over all its attempts.  Unset: no limit."""
    warn_at: float = Field(0.8, gt=0, le=1)
    """Fraction of a budget at which a warning event is sent."""


# --------------------------------------------------------------------------- [notify]

_CHAT_USERNAME = re.compile(r"@[A-Za-z][A-Za-z0-9_]{3,}")
_CHAT_NUMBER = re.compile(r"-?[0-9]+")


def _chat_id(value: Any) -> int | str:
    """A Telegram chat: its number (a string of digits is read as one) or ``@channelname``.

    One validator for both types, so a wrong value gives one problem, not one per member of a union.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _CHAT_NUMBER.fullmatch(value):
        return int(value)
    if isinstance(value, str) and _CHAT_USERNAME.fullmatch(value):
        return value
    raise PydanticCustomError(
        "chat_id",
        "must be a numeric chat id or a public @channelname",
        {"fix": "write the number the bot sees for the chat, e.g. chat_ids = [123456789, -1001234567890]"},
    )


#: A Telegram chat id: a number (negative for groups) or ``@channelname``.
ChatId = Annotated[int | str, PlainValidator(_chat_id)]


def _http_base(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc or parts.query or parts.fragment:
        raise PydanticCustomError(
            "http_base",
            "must be an http:// or https:// URL with a host (and no query)",
            {"fix": 'write it like api_base = "https://api.telegram.org" (or your own Bot API server)'},
        )
    return value.rstrip("/")


def _masked_path(url: str) -> str:
    """``url`` with its credentials and everything after the host masked: a webhook's path is its secret."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{host}/…" if parts.path.strip("/") or parts.query else f"{parts.scheme}://{host}"


class _ShownRedacted(_Strict):
    """A section whose ``repr`` shows what its dump shows (its serializers mask URLs)."""

    def __repr_args__(self) -> Any:
        shown = self.model_dump()
        return [(name, shown.get(name, value) if name else value) for name, value in super().__repr_args__()]


class TelegramSettings(_ShownRedacted):
    """``[notify.telegram]``: a bot that writes to chats, with buttons to answer escalations.

    The token is read from the variable ``bot_token_env`` names (or, failing that, a
    ``bot_token`` written in notification.json); it is never written in a TOML file.
    """

    enabled: bool = True
    bot_token_env: SecretEnvName = "TELEGRAM_BOT_TOKEN"  # noqa: S105 - the variable's name, not a token
    """The environment variable that holds the bot token (from @BotFather)."""
    chat_ids: list[ChatId] = Field(min_length=1)
    """Chats the bot writes to; only presses from these chats answer an escalation."""
    api_base: Annotated[str, AfterValidator(_http_base)] = "https://api.telegram.org"
    """The Bot API server: Telegram's, or a self-hosted telegram-bot-api."""
    poll_answers: bool = True
    """Poll for button presses (getUpdates).  Off when something else owns the bot's updates (a webhook)."""
    poll_timeout_s: int = Field(25, ge=1, le=50)
    """How long one getUpdates call waits for a press (long polling)."""
    rate_per_minute: int = Field(20, ge=1)
    """Messages per minute to each chat (Telegram allows about 20 a minute in a group)."""

    @field_serializer("api_base")
    def _redacted(self, value: str) -> str:
        return redact_url(value)


class DiscordSettings(_Strict):
    """``[notify.discord]``: a channel webhook.  Its URL is a secret: it is read from ``webhook_url_env``."""

    enabled: bool = True
    webhook_url_env: SecretEnvName = "DISCORD_WEBHOOK_URL"
    """The environment variable that holds the webhook URL (https://discord.com/api/webhooks/ID/TOKEN)."""
    rate_per_minute: int = Field(30, ge=1)
    """Messages per minute (Discord allows 30 a minute per webhook)."""


class WebhookSettings(_ShownRedacted):
    """``[[notify.webhooks]]``: a URL that receives each notice as a JSON POST.

    Exactly one of ``url`` and ``url_env``.  ``headers_env`` names a variable holding
    extra headers (a JSON object, or ``Name: value`` lines), e.g. an Authorization header.
    """

    name: str | None = Field(None, min_length=1, max_length=40)
    """How the channel is named in counters and logs (default: webhook[N])."""
    url: str | None = None
    """The endpoint, e.g. https://hooks.example/notify (its path is masked wherever it is shown)."""
    url_env: SecretEnvName | None = None
    """Or: the environment variable that holds the endpoint."""
    headers_env: SecretEnvName | None = None
    """The environment variable that holds extra headers."""
    rate_per_minute: int = Field(60, ge=1)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            # Never echo the value: a webhook URL often carries its token.
            raise PydanticCustomError(
                "url", "must be an http:// or https:// URL with a host", {"fix": 'write url = "https://HOST/PATH"'}
            )
        return value

    @model_validator(mode="after")
    def _one_url(self) -> WebhookSettings:
        if (self.url is None) == (self.url_env is None):
            raise PydanticCustomError(
                "webhook_url",
                "a webhook needs exactly one of url and url_env",
                {"fix": 'write url = "https://HOST/PATH", or url_env = "NAME" with the URL in that variable'},
            )
        return self

    @field_serializer("url")
    def _masked(self, value: str | None) -> str | None:
        return _masked_path(value) if value is not None else None


class AppriseSettings(_Strict):
    """``[notify.apprise]``: any service Apprise knows (Slack, ntfy, Matrix, e-mail, ...), by URL.

    The URLs carry credentials, so they live in the variable ``urls_env`` names:
    one or more Apprise URLs separated by spaces or new lines.
    """

    enabled: bool = True
    urls_env: SecretEnvName = "APPRISE_URLS"
    rate_per_minute: int = Field(30, ge=1)
    """Messages per minute to each URL."""


class NotifySettings(_Strict):
    """``[notify]``: where the user hears about the run, and how hard the Notifier tries.

    Sending never blocks or fails the pipeline: each channel has its own queue, rate
    limit and retries; a notice given up on is reported, not raised.
    """

    console: bool = True
    """Print each notice on the terminal that runs the executor."""
    events: list[NoticeKind] = Field(default_factory=lambda: list(NOTICE_KINDS))
    """Kinds of notice to send (default: all)."""
    digest_interval_s: float = Field(7200.0, ge=0)
    """Seconds between two progress digests; 0 turns digests off."""
    max_attempts: int = Field(5, ge=1)
    """Attempts per notice and channel before it is dropped (and reported)."""
    retry_backoff_s: float = Field(2.0, gt=0)
    """First delay before a retry, in seconds; it doubles with each attempt (a 429's Retry-After wins)."""
    timeout_s: float = Field(10.0, gt=0)
    """Seconds one HTTP request to a channel may take."""
    telegram: TelegramSettings | None = None
    discord: DiscordSettings | None = None
    webhooks: list[WebhookSettings] = Field(default_factory=list)
    apprise: AppriseSettings | None = None

    @field_validator("events")
    @classmethod
    def _each_once(cls, kinds: list[str]) -> list[str]:
        return list(dict.fromkeys(kinds))


# --------------------------------------------------------------------------- [mcp_servers.<name>]

#: A server's name: what a task's ``"mcp": {"server": ...}`` and a role-spec's ``mcp_server:`` say.
_SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: ``${NAME}`` inside an ``env`` or ``headers`` value: the executor's environment variable NAME,
#: read when the server is contacted.  Secrets stay in the environment, never in the file.
#: The one reference pattern: it matches a malformed ``${...}`` too, which the validator refuses.
ENV_REFERENCE = re.compile(r"\$\{([^{}]*)\}")


def env_references(value: str) -> list[str]:
    """The variable names ``value`` refers to with ``${NAME}``, in order."""
    return [match.group(1) for match in ENV_REFERENCE.finditer(value)]


def without_references(value: str) -> str:
    """``value`` with its ``${NAME}`` references taken out: the literal text it holds."""
    return ENV_REFERENCE.sub("", value)


def _masked_literal(value: str) -> str:
    """``value`` as it may be shown: ``${NAME}`` references kept, each run of literal text
    replaced by ``…`` (it may be a secret written straight into the file)."""
    parts = ENV_REFERENCE.split(value)  # literal, name, literal, name, ..., literal
    return "".join(f"${{{part}}}" if index % 2 else ("…" if part else "") for index, part in enumerate(parts))


def _server_name(value: str) -> str:
    if not _SERVER_NAME.fullmatch(value):
        raise PydanticCustomError(
            "server_name",
            "a server name must start with a letter or digit and hold only letters, digits, '.', '_' and '-'",
            {"fix": "rename the table, e.g. [mcp_servers.netops]"},
        )
    return value


def _referencing_value(value: str) -> str:
    # Never echo the value: it may be a secret pasted in place of a ${NAME} reference.
    names = env_references(value)
    rest = without_references(value)
    if "${" in rest or any(not _ENV_NAME.fullmatch(name) for name in names):
        raise PydanticCustomError(
            "env_reference",
            "holds a malformed ${...} reference",
            {"fix": "write ${NAME} with NAME an environment variable (letters, digits and _), e.g. ${NETOPS_TOKEN}"},
        )
    return value


def _variable_name(value: str) -> str:
    if not _ENV_NAME.fullmatch(value):
        raise PydanticCustomError(
            "variable_name",
            "is not a valid environment variable name",
            {"fix": "use letters, digits and _ only, not starting with a digit, e.g. NETOPS_MODE"},
        )
    return value


McpServerName = Annotated[str, AfterValidator(_server_name)]
ReferencingValue = Annotated[str, AfterValidator(_referencing_value)]
_VariableName = Annotated[str, AfterValidator(_variable_name)]
_Arg = Annotated[str, Field(min_length=1)]


class McpServerConfig(_Strict):
    """``[mcp_servers.<name>]``: an MCP server the executor calls tools on.

    Exactly one of ``command`` (the server is started as a subprocess and spoken
    to over stdio) and ``url`` (a streamable HTTP server).  Values of ``env`` and
    ``headers`` may hold ``${NAME}`` references to the executor's environment;
    ``token_env`` names the variable whose value is sent as ``Authorization: Bearer``.
    """

    command: list[_Arg] | None = None
    """argv of a stdio server: the program, then its arguments (no shell)."""
    env: dict[_VariableName, ReferencingValue] = Field(default_factory=dict)
    """Variables the stdio server gets on top of a minimal safe environment (PATH, HOME, ...)."""
    url: str | None = None
    """Endpoint of a streamable HTTP server, e.g. http://127.0.0.1:9000/mcp."""
    headers: dict[Annotated[str, Field(min_length=1)], ReferencingValue] = Field(default_factory=dict)
    """Extra HTTP headers sent to a url server."""
    token_env: EnvName | None = None
    """The environment variable holding a bearer token for a url server."""
    health_interval_s: float = Field(30.0, gt=0)
    """Seconds between two health checks (connect, initialize, list tools)."""
    timeout_s: float = Field(60.0, gt=0)
    """Seconds one tool call (connect included) may take."""

    @field_validator("command")
    @classmethod
    def _check_command(cls, value: list[str] | None) -> list[str] | None:
        if value == []:
            raise PydanticCustomError(
                "command_empty",
                "names no program",
                {"fix": 'write the program and its arguments, e.g. command = ["netops-mcp", "--stdio"]'},
            )
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return _http_url(value, 'url = "http://127.0.0.1:9000/mcp"')

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if self.command is None and self.url is None:
            raise PydanticCustomError(
                "mcp_transport_missing",
                "an MCP server needs either command or url",
                {
                    "fix": 'add command = ["program", "arg", ...] (a server run as a subprocess over stdio) '
                    'or url = "http://HOST:PORT/mcp" (a streamable HTTP server)'
                },
            )
        if self.command is not None and self.url is not None:
            raise PydanticCustomError(
                "mcp_transport_both",
                "an MCP server has either command or url, not both",
                {"fix": "keep command for a server run as a subprocess, or url for a server already listening"},
            )
        if self.command is not None and (self.headers or self.token_env is not None):
            raise PydanticCustomError(
                "mcp_http_only",
                "headers and token_env apply to a url server only",
                {"fix": "remove them, or pass what the server needs through env"},
            )
        if self.url is not None and self.env:
            raise PydanticCustomError(
                "mcp_stdio_only",
                "env applies to a command (stdio) server only",
                {"fix": "remove env, or send what the server needs as headers (or a bearer token via token_env)"},
            )
        return self

    # Shown and dumped (repr, model_dump, `executor config check`) without secrets: the
    # attributes keep the values, which only the MCP client reads.
    @field_serializer("env", "headers")
    def _masked(self, values: dict[str, str]) -> dict[str, str]:
        return {name: _masked_literal(value) for name, value in values.items()}

    @field_serializer("url")
    def _redacted(self, value: str | None) -> str | None:
        return redact_url(value) if value is not None else None

    def __repr_args__(self) -> Any:
        shown = self.model_dump()
        return [(name, shown.get(name, value) if name else value) for name, value in super().__repr_args__()]

    @property
    def transport(self) -> Literal["stdio", "http"]:
        return "stdio" if self.command is not None else "http"

    @property
    def endpoint(self) -> str:
        """What to show people: the program of a stdio server, the URL (credentials masked) of an HTTP one."""
        return self.command[0] if self.command is not None else redact_url(self.url or "")

    def variables(self) -> list[str]:
        """Every environment variable this server's settings read, each once, in order."""
        names = [name for value in (*self.env.values(), *self.headers.values()) for name in env_references(value)]
        if self.token_env is not None:
            names.append(self.token_env)
        return list(dict.fromkeys(names))

    def missing_variables(self, environ: Mapping[str, str]) -> list[str]:
        """The variables of :meth:`variables` that are unset or empty in ``environ``."""
        return [name for name in self.variables() if not environ.get(name, "").strip()]


# --------------------------------------------------------------------------- the file, and the loaded config


class Settings(_Strict):
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


_SECRET_KEY_NAME = re.compile(r"token|secret|key|pass|auth|webhook|url|credential", re.IGNORECASE)


def _mask_mapping(value: Any, secret: bool = False) -> Any:
    """A copy of a JSON value with every string at or under a secret-looking key masked."""
    if isinstance(value, dict):
        return {key: _mask_mapping(item, secret or bool(_SECRET_KEY_NAME.search(key))) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask_mapping(item, secret) for item in value]
    return mask(value) if secret and isinstance(value, str) else value


class FleetAgent(_Strict):
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


class HydraKeyEntry(_Strict):
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


class HydraKeysFile(_Strict):
    """A seed ``hydra_keys.json``: ``keys[] {provider, key, tier}``, ``rotation_strategy``, ``fallback``."""

    keys: list[HydraKeyEntry] = Field(default_factory=list)
    rotation_strategy: Rotation | None = None
    fallback: Annotated[Any, BeforeValidator(_seed_fallback)] = None
    last_updated: str | None = None


class FleetFile(_Strict):
    """A seed ``fleet_registry.json``: ``agents[] {id, name, type, status}``."""

    agents: list[FleetAgent] = Field(default_factory=list)
