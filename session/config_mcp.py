"""The ``[mcp_servers.<name>]`` table: how to reach one MCP server.

Its secrets are only ``${NAME}`` references to the environment, read when the server is contacted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from session.config_fields import ENV_NAME, EnvName, StrictModel, http_url, redact_url

__all__ = [
    "ENV_REFERENCE",
    "McpServerConfig",
    "McpServerName",
    "ReferencingValue",
    "env_references",
    "without_references",
]


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
    if "${" in rest or any(not ENV_NAME.fullmatch(name) for name in names):
        raise PydanticCustomError(
            "env_reference",
            "holds a malformed ${...} reference",
            {"fix": "write ${NAME} with NAME an environment variable (letters, digits and _), e.g. ${NETOPS_TOKEN}"},
        )
    return value


def _variable_name(value: str) -> str:
    if not ENV_NAME.fullmatch(value):
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


class McpServerConfig(StrictModel):
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
        return http_url(value, 'url = "http://127.0.0.1:9000/mcp"')

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
