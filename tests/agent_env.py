"""Run the real agent CLIs (Claude Code, codex, Gemini CLI) headless against a :class:`FakeLLM`.

Verified with Claude Code 2.1.328, codex-cli 0.169.0 and Gemini CLI 0.61.0 (see
tests/test_fake_llm.py). Every run gets a throwaway HOME and TMPDIR, TERM=dumb, stdin from
/dev/null and only the environment variables listed here: nothing from the caller's
environment leaks in except PATH (the codex and gemini launchers are ``#!/usr/bin/env node``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
CLIS = ("claude", "codex", "gemini")
DEFAULT_CLI_DIRS = (Path("/work/agent-clis/node_modules/.bin"), REPO_ROOT / ".agent-clis" / "node_modules" / ".bin")

# Model names each CLI knows (an unknown codex model loses tools such as apply_patch and prints
# a "Model metadata ... not found" error item; without -m gemini first calls a routing model).
DEFAULT_MODELS = {"claude": "claude-sonnet-4-5", "codex": "gpt-5.5", "gemini": "gemini-2.5-flash"}
FAKE_KEY = "sk-fake-key-for-tests"

# Claude tool allow-lists per permission level ("full" bypasses permissions altogether).
CLAUDE_TOOLS = {"read": "Read,Glob,Grep", "write": "Read,Glob,Grep,Write,Edit,NotebookEdit"}
PERMISSIONS = ("read", "write", "full")


def cli_path(name: str) -> Path | None:
    """The executable of agent CLI ``name`` (claude, codex, gemini), or None when not installed.

    Looks in $TEAM_EXECUTOR_AGENT_CLIS (a node_modules/.bin folder), /work/agent-clis/node_modules/.bin,
    <repo>/.agent-clis/node_modules/.bin, then PATH.
    """
    dirs: list[Path] = []
    configured = os.environ.get("TEAM_EXECUTOR_AGENT_CLIS")
    if configured:
        dirs.append(Path(configured))
    dirs.extend(DEFAULT_CLI_DIRS)
    for folder in dirs:
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def cli_invocation(
    name: str,
    fake_url: str,
    workdir: Path | str,
    home: Path | str,
    prompt: str,
    permission: str = "write",
    *,
    model: str | None = None,
    output_format: str | None = None,
    max_turns: int | None = None,
    retries: int = 0,
    request_timeout_s: float | None = None,
    executable: Path | str | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The argv and the complete environment to run CLI ``name`` against the fake server at ``fake_url``.

    ``permission``: ``read`` (read-only tools), ``write`` (file edits inside ``workdir`` allowed,
    no arbitrary shell for Claude/Gemini) or ``full`` (everything, no sandbox).
    ``output_format``: claude ``stream-json`` (default) or ``json``; gemini ``stream-json``
    (default) or ``json``; codex always ``exec --json`` (JSONL events).
    ``retries``: how often the CLI itself retries 429/5xx (0 = fail on the first error).
    ``request_timeout_s``: the CLI's own request timeout where one exists (claude API_TIMEOUT_MS;
    codex stream_idle_timeout_ms, which only fires once response headers have arrived; gemini has none).
    Creates ``home`` (and ``home/tmp``), and for gemini writes ``home/.gemini/settings.json``.
    Run the argv with cwd=``workdir`` and stdin=/dev/null (see :func:`run_cli`).
    """
    if permission not in PERMISSIONS:
        raise ValueError(f"permission must be one of {PERMISSIONS}, not {permission!r}")
    exe = Path(executable) if executable else cli_path(name)
    if exe is None:
        raise FileNotFoundError(f"agent CLI {name!r} not found")
    home = Path(home)
    workdir = Path(workdir)
    tmp = home / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    model = model or DEFAULT_MODELS[name]
    env = {
        "PATH": f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "TERM": "dumb",
        "NO_COLOR": "1",
        "LANG": "C.UTF-8",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    if name == "claude":
        fmt = output_format or "stream-json"
        argv = [str(exe), "-p", "--output-format", fmt, "--model", model]
        if fmt == "stream-json":
            argv.append("--verbose")  # required by -p with stream-json
        if permission == "full":
            argv.append("--dangerously-skip-permissions")
            env["IS_SANDBOX"] = "1"  # as root Claude refuses to skip permissions otherwise
        else:
            mode = "acceptEdits" if permission == "write" else "default"
            argv += ["--permission-mode", mode, f"--allowedTools={CLAUDE_TOOLS[permission]}"]
        argv += ["--strict-mcp-config", "--no-session-persistence"]
        if max_turns is not None:
            argv += ["--max-turns", str(max_turns)]
        argv += ["--", prompt]
        env |= {
            "ANTHROPIC_BASE_URL": fake_url,
            "ANTHROPIC_API_KEY": FAKE_KEY,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",  # else a HEAD /api/hello probe first
            "CLAUDE_CODE_MAX_RETRIES": str(retries),
            "DISABLE_AUTOUPDATER": "1",
        }
        if request_timeout_s is not None:
            env["API_TIMEOUT_MS"] = str(int(request_timeout_s * 1000))
        return argv, env
    if name == "codex":
        provider = {
            "name": '"local"',
            "base_url": json.dumps(f"{fake_url}/v1"),
            "env_key": '"LOCAL_KEY"',
            "wire_api": '"responses"',
            "request_max_retries": str(retries),
            "stream_max_retries": str(retries),
        }
        if request_timeout_s is not None:
            provider["stream_idle_timeout_ms"] = str(int(request_timeout_s * 1000))
        table = "{" + ",".join(f"{key}={value}" for key, value in provider.items()) + "}"
        argv = [str(exe), "exec", "--json", "--skip-git-repo-check", "--ephemeral", "-C", str(workdir), "-m", model]
        argv += ["-c", "model_provider=local", "-c", f"model_providers.local={table}"]
        if max_turns is not None:
            raise ValueError("codex exec has no max-turns option")
        if permission == "full":
            argv.append("--dangerously-bypass-approvals-and-sandbox")
        else:
            argv += ["--sandbox", "workspace-write" if permission == "write" else "read-only"]
        argv += ["--", prompt]
        env |= {"LOCAL_KEY": FAKE_KEY, "CODEX_HOME": str(home / ".codex")}
        (home / ".codex").mkdir(parents=True, exist_ok=True)
        return argv, env
    if name == "gemini":
        settings: dict[str, Any] = {
            "security": {"auth": {"selectedType": "gemini-api-key"}},
            "telemetry": {"enabled": False},
            "privacy": {"usageStatisticsEnabled": False},
            "general": {"maxAttempts": retries + 1, "enableAutoUpdate": False, "enableAutoUpdateNotification": False},
        }
        if max_turns is not None:
            settings["model"] = {"maxSessionTurns": max_turns}
        (home / ".gemini").mkdir(parents=True, exist_ok=True)
        (home / ".gemini" / "settings.json").write_text(json.dumps(settings, indent=2))
        approval = {"read": "default", "write": "auto_edit", "full": "yolo"}[permission]
        argv = [str(exe), "-o", output_format or "stream-json", "-m", model, "--approval-mode", approval]
        argv += ["--skip-trust", f"--prompt={prompt}"]
        env |= {"GEMINI_API_KEY": FAKE_KEY, "GOOGLE_GEMINI_BASE_URL": fake_url}
        return argv, env
    raise ValueError(f"unknown agent CLI {name!r}; expected one of {CLIS}")


@dataclass
class CliRun:
    """What one CLI run produced."""

    argv: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool

    def events(self) -> list[dict[str, Any]]:
        """The JSON objects on stdout (one per line; a single JSON document also works)."""
        return json_events(self.stdout)


def json_events(text: str) -> list[dict[str, Any]]:
    """Parse JSONL (or one JSON document); lines that are not JSON objects are skipped."""
    stripped = text.strip()
    if stripped.startswith("{") and "\n" in stripped:
        try:
            whole = json.loads(stripped)
        except ValueError:
            whole = None
        if isinstance(whole, dict):
            return [whole]
    events = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            events.append(value)
    return events


def start_cli(argv: Sequence[str], env: dict[str, str], cwd: Path | str) -> subprocess.Popen[str]:
    """Start an agent CLI in its own process group, stdin from /dev/null, stdout/stderr piped."""
    return subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def run_cli(argv: Sequence[str], env: dict[str, str], cwd: Path | str, timeout_s: float = 60) -> CliRun:
    """Run an agent CLI to the end; after ``timeout_s`` kill its whole process group."""
    started = time.monotonic()
    proc = start_cli(argv, env, cwd)
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_process_group(proc)
        stdout, stderr = proc.communicate(timeout=10)
    return CliRun(
        list(argv), None if timed_out else proc.returncode, stdout, stderr, time.monotonic() - started, timed_out
    )


def kill_process_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the process group, then SIGKILL whatever of it is left."""
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
