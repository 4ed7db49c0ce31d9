"""The README's first lines and its Quick start, followed literally by a new user.

The Quick start block is read from README.md and run command by command in a fresh
folder, in order; each must exit 0.  Two kinds of line never end by themselves: `watch`
gets `--once`, and the `--http` lines get a free port instead of 8765 (tests run side by
side), are waited on until /healthz answers, then stopped with SIGTERM (a clean stop
exits 0).  Everything else is exactly as printed.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from tests.conftest import EXECUTOR, run_executor

README = Path(__file__).resolve().parents[1] / "README.md"
TEST_EXTRAS = ("pytest", "_pytest", "playwright", "schemathesis", "hypothesis")


def sh_blocks(text: str) -> list[list[str]]:
    return [block.strip().splitlines() for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL)]


def quick_start() -> list[list[str]]:
    section = README.read_text().split("## Quick start", 1)[1]
    lines = sh_blocks(section)[0]
    return [shlex.split(line, comments=True) for line in lines]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve_then_stop(argv: list[str], cwd: Path) -> tuple[int, str]:
    """Run a serving command until its dashboard answers, then SIGTERM it; its exit code and output."""
    port = free_port()
    at = argv.index("--http")
    argv = [*argv[: at + 1], str(port), *argv[at + 2 :]]
    process = subprocess.Popen(
        [str(EXECUTOR), *argv[1:]],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code in (200, 503):
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert process.poll() is None, f"{shlex.join(argv)} ended before serving"
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, out


def test_the_first_lines_install_the_demo_without_the_test_extras():
    first, second = sh_blocks(README.read_text())[0]
    assert "pip install -e . &&" in first
    assert first.endswith("&& executor demo")
    assert "[test" not in first
    assert "'.[test,ray]'" in second  # the extras .ci/run installs: the cluster tests need Ray
    assert second.endswith("python -m pytest")


def test_the_demo_runs_without_any_test_extra_importable(tmp_path):
    """`pip install -e .` is enough: the demo never imports pytest, Playwright, ..."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {TEST_EXTRAS!r}:\n"
        "            raise ImportError(name + ' is a test extra')\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    result = run_executor("demo", cwd=work, env={"PYTHONPATH": str(blocker)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "progress: 3/3 (100%)" in result.stdout
    assert "3 files changed" in result.stdout, "the story demo edits its project"


def test_the_quick_start_runs_as_written_in_a_fresh_folder(tmp_path):
    commands = quick_start()
    assert [argv[:2] for argv in commands] == [
        ["executor", "init"],
        ["executor", "validate"],
        ["executor", "check"],
        ["executor", "run"],
        ["executor", "resume"],
        ["executor", "watch"],
        ["executor", "run"],
        ["executor", "demo"],
    ], "the Quick start changed: keep this test following it"
    for argv in commands:
        assert argv[0] == "executor"
        if "--http" in argv:
            code, out = serve_then_stop(argv, tmp_path)
        else:
            bounded = [*argv, "--once"] if argv[1] == "watch" else argv
            result = run_executor(*bounded[1:], cwd=tmp_path)
            code, out = result.returncode, result.stdout + result.stderr
        assert code == 0, f"`{shlex.join(argv)}` exited {code}:\n{out}"
        assert "Traceback" not in out
    assert (tmp_path / "work" / "login" / "artifacts").is_dir()
