"""The `Example:` line of each command's --help works as printed, in order, in a fresh folder."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

from tests.conftest import run_executor

EXAMPLE = re.compile(r"Example: (executor .+?)(?:\s{2,}|$)", re.MULTILINE)

# In the order a person would try them; `watch` gets --once (it runs until Ctrl-C).
COMMANDS = (
    ["init"],
    ["validate"],
    ["check"],
    ["run"],
    ["resume"],
    ["watch"],
    ["config", "check"],
    ["models"],
    ["panic"],
)


def example_of(command: list[str], cwd) -> str:
    help_text = run_executor(*command, "--help", cwd=cwd).stdout
    # Help paragraphs are wrapped to the terminal: read each one as a single line.
    unwrapped = re.sub(r"\n[ \t]+(?=\S)", " ", help_text)
    found = EXAMPLE.findall(unwrapped)
    assert found, f"`executor {' '.join(command)} --help` shows no example:\n{help_text}"
    return found[0]


def test_each_help_example_runs_as_printed(tmp_path):
    for command in COMMANDS:
        example = example_of(command, tmp_path)
        argv = shlex.split(example)[1:]
        if command == ["watch"]:
            argv.append("--once")
        result = run_executor(*argv, cwd=tmp_path)
        assert result.returncode == 0, f"`{example}` exited {result.returncode}:\n{result.stdout}{result.stderr}"


def test_the_command_line_starts_without_loading_the_backends() -> None:
    # Every command (`check`, `task next`, `watch`...) pays for what cli.main imports; agents call
    # some of them in loops. The backends (and httpx with them) load only for the commands that run
    # or inspect them — a module-level import of backends.registry in a command module undoes that.
    code = (
        "import sys, cli.main; "
        "print(sorted(m for m in sys.modules if m.startswith(('backends.', 'httpx', 'actors.', 'web.', 'ray'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_command_runs_in_an_app_narrowed_to_it_and_says_exactly_what_the_whole_app_says():
    # Typer builds every command before it parses: main() hands it only the command named.
    from typer.testing import CliRunner  # noqa: PLC0415

    from cli.main import app, only_command  # noqa: PLC0415

    runner = CliRunner()
    for argv in (["check", "--help"], ["run", "--help"], ["task", "show", "--help"], ["check", "--bogus"]):
        narrowed = only_command(["executor", *argv])
        assert narrowed is not app
        assert len(narrowed.registered_commands) + len(narrowed.registered_groups) == 1
        whole, narrow = runner.invoke(app, argv), runner.invoke(narrowed, argv)
        assert (narrow.exit_code, narrow.output) == (whole.exit_code, whole.output), argv
    for argv in ([], ["--help"], ["--version"], ["chek"]):  # no command named: the whole app answers
        assert only_command(["executor", *argv]) is app


def test_the_module_runs_as_the_console_script_does():
    # A git hook falls back to `python -P -m cli.main` where the console script is not on PATH
    # (-P: not from the project folder the hook runs in, where agents write).
    result = subprocess.run(
        [sys.executable, "-P", "-m", "cli.main", "--version"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("executor (team-executor) ")
