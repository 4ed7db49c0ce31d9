"""``executor probe``: which agent CLIs are here, and can we drive them?

For each agent backend: is its program installed (``$TEAM_EXECUTOR_AGENT_CLIS``
then PATH), its version, whether credentials are present (a key variable or a
login file — never printed), and which of the flags we pass the installed
version's ``--help`` mentions.  The CLIs are asked in parallel, each with a
timeout, with stdin closed and a dumb terminal.
"""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import msgspec

from backends.agent_cli import AgentCliBackend, locate_program
from backends.sandbox import allowlisted_env

__all__ = ["ProbeRow", "probe"]

_TIMEOUT_S = 30.0
_VERSION = re.compile(r"\d+\.\d+(?:\.\d+)?(?:[-+.][\w.]+)?")


class ProbeRow(msgspec.Struct, frozen=True, kw_only=True):
    backend: str
    program: str
    installed: bool
    path: str | None = None
    version: str | None = None
    credentials: bool = False
    credential_sources: list[str] = msgspec.field(default_factory=list)  # names only, never values
    flags: dict[str, bool] = msgspec.field(default_factory=dict)
    problem: str | None = None


def _output(argv: list[str]) -> str | None:
    try:
        completed = subprocess.run(
            argv,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=_TIMEOUT_S,
            check=False,
            env={**allowlisted_env(), "TERM": "dumb", "NO_COLOR": "1"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (completed.stdout + completed.stderr).decode("utf-8", "replace")


def _probe_one(backend: AgentCliBackend) -> ProbeRow:
    path = locate_program(backend.program)
    sources = [name for name in backend.key_variables if backend.environ.get(name)]
    credentials = backend.has_credentials()
    if credentials and not sources:
        sources = ["login files"]
    if path is None:
        return ProbeRow(
            backend=backend.name,
            program=backend.program,
            installed=False,
            credentials=credentials,
            credential_sources=sources,
            problem=f"not installed: {backend.install_hint}",
        )
    version_text = _output([path, "--version"]) or ""
    match = _VERSION.search(version_text)
    help_text = " ".join(filter(None, (_output([path, *argv]) for argv in backend.help_commands)))
    flags = {flag: flag in help_text for flag in backend.probe_flags}
    missing = [flag for flag, present in flags.items() if not present]
    problem = None
    if not help_text:
        problem = f"`{backend.program} --help` did not answer"
    elif missing:
        problem = f"this version does not mention {', '.join(missing)}; runs may fail"
    elif not credentials:
        problem = f"no credentials: set {' or '.join(backend.key_variables)}"
    return ProbeRow(
        backend=backend.name,
        program=backend.program,
        installed=True,
        path=path,
        version=match.group(0) if match else None,
        credentials=credentials,
        credential_sources=sources,
        flags=flags,
        problem=problem,
    )


def probe(backends: list[AgentCliBackend]) -> list[ProbeRow]:
    if not backends:
        return []
    with ThreadPoolExecutor(max_workers=len(backends)) as pool:
        return list(pool.map(_probe_one, backends))
