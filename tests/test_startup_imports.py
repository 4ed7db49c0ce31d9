"""What a command loads is what it uses: heavy libraries load only on the paths that need them.

Every `executor` command pays for its imports before it does anything; agents call `check`
in loops and a run's start-up is part of what issue 18 measures against make.  Each test runs
the real console script with ``-X importtime`` (``PYTHONPROFILEIMPORTTIME``) and reads the
modules it loaded from stderr, so a module-level import that undoes the laziness fails here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

from tests.conftest import run_executor
from tests.sessions import DEMO, layered_session

_IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$", re.MULTILINE)

#: Loaded only when something needs them: an HTTP channel, a Telegram poller, an openai_http call
#: (httpx, asyncio); an encrypted key store that exists (cryptography); `run --backend` writing
#: executor.toml (tomlkit).
_NOT_FOR_A_PLAIN_RUN = ("httpx", "asyncio", "cryptography", "tomlkit")


def _loaded(*args: str, **kwargs: object) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    result = run_executor(*args, env={"PYTHONPROFILEIMPORTTIME": "1"}, **kwargs)
    return result, set(_IMPORTED.findall(result.stderr))


def _among(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    """Which of ``packages`` (or modules in them) were loaded."""
    return sorted(p for p in packages if any(m == p or m.startswith(f"{p}.") for m in modules))


def test_a_run_without_channels_or_stored_keys_loads_no_http_client_crypto_or_toml_writer(tmp_path) -> None:
    session = layered_session(
        tmp_path / "session",
        layers=1,
        width=1,
        role_extra={"worker": 'backend: command\ncommand: ["echo", "{task_id} done"]\n'},
    )
    result, modules = _loaded("run", "--session", str(session))
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "actors.executor" in modules  # the run itself was traced
    assert _among(modules, _NOT_FOR_A_PLAIN_RUN) == []


def test_check_loads_no_http_client_crypto_or_toml_writer(tmp_path) -> None:
    session = shutil.copytree(DEMO, tmp_path / "demo")
    result, modules = _loaded("check", "--session", str(session))
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "session.loader" in modules  # the session was read
    assert _among(modules, _NOT_FOR_A_PLAIN_RUN) == []


def test_importing_the_run_loads_no_http_client_crypto_or_toml_writer() -> None:
    # What issue 18 times: the modules behind `executor run`, before any session is read.
    code = "import sys, actors.run, cli.run_cmd; print('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert _among(set(result.stdout.split()), _NOT_FOR_A_PLAIN_RUN) == []
