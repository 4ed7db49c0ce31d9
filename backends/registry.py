"""The backends by name: what a role-spec's ``backend:`` key may say."""

from __future__ import annotations

from backends.agent_cli import AgentCliBackend
from backends.aider import AiderBackend
from backends.base import Backend
from backends.claude import ClaudeBackend
from backends.codex import CodexBackend
from backends.command import CommandBackend
from backends.demo import DemoBackend
from backends.gemini import GeminiBackend
from backends.manual import ManualBackend
from backends.mcp_call import McpCallBackend
from backends.openai_http import OpenAIHttpBackend
from backends.opencode import OpencodeBackend
from backends.qwen import QwenBackend

__all__ = ["BACKENDS", "UnknownBackend", "agent_backends", "backend_names", "get_backend"]

#: One instance each: backends keep no state between attempts.
BACKENDS: dict[str, Backend] = {
    backend.name: backend
    for backend in (
        CommandBackend(),
        DemoBackend(),
        ClaudeBackend(),
        CodexBackend(),
        GeminiBackend(),
        OpencodeBackend(),
        AiderBackend(),
        QwenBackend(),
        OpenAIHttpBackend(),
        ManualBackend(),  # a person takes its tasks (`executor task claim`)
        McpCallBackend(),  # its servers come from register_servers() (the config's [mcp_servers])
    )
}


def agent_backends() -> list[AgentCliBackend]:
    """The backends that drive an agent CLI (what `executor probe` reports on)."""
    return [backend for backend in BACKENDS.values() if isinstance(backend, AgentCliBackend)]


class UnknownBackend(LookupError):
    """A role asks for a backend that does not exist; the message lists the ones that do."""

    def __init__(self, name: str, choices: list[str]) -> None:
        self.name = name
        self.choices = choices
        super().__init__(f"unknown backend '{name}'; choose one of: {', '.join(choices)}")


def backend_names() -> list[str]:
    """The names a role-spec's ``backend:`` key may use, sorted."""
    return sorted(BACKENDS)


def get_backend(name: str) -> Backend:
    """The backend called ``name``.  Raises :class:`UnknownBackend`."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise UnknownBackend(name, backend_names()) from None
