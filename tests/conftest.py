from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

EXECUTOR = Path(sys.executable).with_name("executor")
_EMPTY_CONFIG = Path(tempfile.mkdtemp(prefix="executor-test-config-"))


def run_executor(*args: str, timeout: float = 120, env: dict[str, str] | None = None, **kwargs: object):
    """Run the real installed `executor` console script in a subprocess."""
    # An empty user config folder unless a test brings its own: a developer's real
    # ~/.config/team-executor must never change what a test sees.
    full_env = {**os.environ, "COLUMNS": "200", "TEAM_EXECUTOR_CONFIG_DIR": str(_EMPTY_CONFIG), **(env or {})}
    full_env.pop("EXECUTOR_DEBUG", None)
    return subprocess.run(
        [str(EXECUTOR), *args], capture_output=True, text=True, timeout=timeout, env=full_env, check=False, **kwargs
    )


@pytest.fixture
def executor_cli():
    assert EXECUTOR.exists(), f"{EXECUTOR} missing: install the project with pip install -e '.[test]'"
    return run_executor
