"""The backends by name: what a role-spec's ``backend:`` key may say."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backends.agent_cli import AgentCliBackend
    from backends.base import Backend

__all__ = ["BACKENDS", "UnknownBackend", "agent_backends", "backend_names", "get_backend"]

#: Each backend's name (its class's ``name``), module and class.  A backend's module loads
#: when the backend is first asked for: `check` needs only the names, and a run loads only
#: the backends its roles use (not the agent CLIs' parsers, not the HTTP client).
_WHERE: dict[str, tuple[str, str]] = {
    "command": ("backends.command", "CommandBackend"),
    "demo": ("backends.demo", "DemoBackend"),
    "claude": ("backends.claude", "ClaudeBackend"),
    "codex": ("backends.codex", "CodexBackend"),
    "gemini": ("backends.gemini", "GeminiBackend"),
    "opencode": ("backends.opencode", "OpencodeBackend"),
    "aider": ("backends.aider", "AiderBackend"),
    "qwen": ("backends.qwen", "QwenBackend"),
    "openai": ("backends.openai_http", "OpenAIHttpBackend"),
    "manual": ("backends.manual", "ManualBackend"),  # a person takes its tasks (`executor task claim`)
    "mcp": ("backends.mcp_call", "McpCallBackend"),  # its servers: register_servers() (the config's [mcp_servers])
}

_made: dict[str, Backend] = {}
_making = threading.RLock()


class _Backends(Mapping[str, "Backend"]):
    """Name -> the backend's one instance, made (under a lock: one each) the first time it is read."""

    def __getitem__(self, name: str) -> Backend:
        with _making:
            backend = _made.get(name)
            if backend is None:
                module, class_name = _WHERE[name]
                backend = _made[name] = getattr(importlib.import_module(module), class_name)()
            return backend

    def __contains__(self, name: object) -> bool:  # without making the backend
        return name in _WHERE

    def __iter__(self) -> Iterator[str]:
        return iter(_WHERE)

    def __len__(self) -> int:
        return len(_WHERE)


#: One instance each: backends keep no state between attempts.
BACKENDS: Mapping[str, Backend] = _Backends()


def agent_backends() -> list[AgentCliBackend]:
    """The backends that drive an agent CLI (what `executor probe` reports on)."""
    from backends.agent_cli import AgentCliBackend  # noqa: PLC0415 - see _WHERE

    return [backend for backend in BACKENDS.values() if isinstance(backend, AgentCliBackend)]


class UnknownBackend(LookupError):
    """A role asks for a backend that does not exist; the message lists the ones that do."""

    def __init__(self, name: str, choices: list[str]) -> None:
        self.name = name
        self.choices = choices
        super().__init__(f"unknown backend '{name}'; choose one of: {', '.join(choices)}")


def backend_names() -> list[str]:
    """The names a role-spec's ``backend:`` key may use, sorted."""
    return sorted(_WHERE)


def get_backend(name: str) -> Backend:
    """The backend called ``name``.  Raises :class:`UnknownBackend`."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise UnknownBackend(name, backend_names()) from None
