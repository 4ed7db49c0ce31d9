"""What a command loads is what it uses: heavy libraries load only on the paths that need them.

Every `executor` command pays for its imports before it does anything; agents call `check`
in loops and a run's start-up is part of what issue 18 measures against make.  Each test runs
the real console script with a ``sitecustomize`` that writes ``sys.modules`` to a file when the
process exits, so a module-level import that undoes the laziness fails here.  (``-X importtime``
would not do: it does not see a module loaded by ``importlib.import_module``.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import run_executor
from tests.sessions import DEMO, layered_session

_SITECUSTOMIZE = """
import atexit, os, sys

def _write_modules():
    with open(os.environ["EXECUTOR_TEST_MODULES_FILE"], "w", encoding="utf-8") as out:
        out.write("\\n".join(sorted(sys.modules)))

atexit.register(_write_modules)
"""

#: Loaded only when something needs them: an HTTP channel, a Telegram poller, an openai_http call
#: (httpx, asyncio); an encrypted key store that exists (cryptography); `run --backend` writing
#: executor.toml (tomlkit); a run on a Ray cluster (cluster.runner).
_NOT_FOR_A_PLAIN_RUN = ("httpx", "asyncio", "cryptography", "tomlkit", "cluster.runner")

#: The backends a role using `command` does not need: the registry loads a backend when it is asked for.
_OTHER_BACKENDS = (
    "backends.agent_cli",
    "backends.aider",
    "backends.claude",
    "backends.codex",
    "backends.demo",
    "backends.gemini",
    "backends.manual",
    "backends.openai_call",
    "backends.openai_http",
    "backends.opencode",
    "backends.qwen",
)


def _loaded(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `executor ARGS`; its result and the modules it had loaded when it exited."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    listing = tmp_path / "modules.txt"
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    result = run_executor(*args, env={"PYTHONPATH": path, "EXECUTOR_TEST_MODULES_FILE": str(listing)})
    return result, set(listing.read_text().split()) if listing.exists() else set()


def _among(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    """Which of ``packages`` (or modules in them) were loaded."""
    return sorted(p for p in packages if any(m == p or m.startswith(f"{p}.") for m in modules))


def test_a_run_without_channels_or_stored_keys_loads_only_what_it_uses(tmp_path) -> None:
    session = layered_session(
        tmp_path / "session",
        layers=1,
        width=1,
        role_extra={"worker": 'backend: command\ncommand: ["echo", "{task_id} done"]\n'},
    )
    result, modules = _loaded(tmp_path, "run", "--session", str(session))
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "actors.executor" in modules  # the listing is the run's
    assert _among(modules, _NOT_FOR_A_PLAIN_RUN) == []
    assert "backends.command" in modules
    assert _among(modules, _OTHER_BACKENDS) == []


def test_check_loads_no_backend_http_client_crypto_or_toml_writer(tmp_path) -> None:
    session = shutil.copytree(DEMO, tmp_path / "demo")
    result, modules = _loaded(tmp_path, "check", "--session", str(session))
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "session.loader" in modules  # the listing is the check's
    assert _among(modules, _NOT_FOR_A_PLAIN_RUN) == []
    # It checks backend names against the registry's table: no backend's code loads.
    assert sorted(m for m in modules if m.startswith("backends.")) == ["backends.registry"]
    # Nor the modules of the other commands (cli.main imports a command's module for that command).
    others = ("cli.backup_cmd", "cli.cluster_cmd", "cli.config_cmd", "cli.diff_cmd", "cli.doctor_cmd", "cli.hook_cmd")
    assert _among(modules, (*others, "cli.init_cmd", "cli.keys_cmd", "cli.models_cmd", "cli.task_cmd")) == []


def test_importing_the_run_loads_no_http_client_crypto_or_toml_writer() -> None:
    # What issue 18 times: the modules behind `executor run`, before any session is read.
    code = "import sys, actors.run, cli.run_cmd; print('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert _among(set(result.stdout.split()), _NOT_FOR_A_PLAIN_RUN) == []


def test_help_loads_neither_the_session_loader_nor_pydantic_psutil_or_pygments(tmp_path) -> None:
    # `executor --help` imports every command module: each imports what only its command runs inside
    # that command, so the help (and every command, for the modules it does not use) is spared.
    result, modules = _loaded(tmp_path, "--help")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "cli.main" in modules  # the listing is the CLI's
    assert _among(modules, ("pydantic", "yaml", "psutil", "pygments", "session.loader", "session.config")) == []
