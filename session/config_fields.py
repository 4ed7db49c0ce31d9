"""The vocabulary of the configuration: its words, its checked field types, its strict base model.

Tier, provider, permission and rotation words; environment-variable NAME fields
(never a key itself); http(s) URLs; the base every user-written section derives from.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "DEFAULT_FALLBACK",
    "ENV_NAME",
    "PROVIDERS",
    "TIERS",
    "EnvName",
    "Permission",
    "Provider",
    "Rotation",
    "SecretEnvName",
    "StrictModel",
    "Tier",
    "TierName",
    "http_url",
    "redact_url",
]


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

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def http_url(value: str | None, example: str) -> str | None:
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
        if not ENV_NAME.fullmatch(value):
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


class StrictModel(BaseModel):
    """Base of every user-written section: unknown keys and loose types are errors; values are frozen."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
