"""The command backend, driving real child processes through real session folders."""

from __future__ import annotations

import json
import os
import stat
import textwrap
import threading
from pathlib import Path

import msgspec
import pytest

from backends.command import CommandBackend, order_argv, substitute
from backends.demo import DemoBackend
from backends.registry import BACKENDS, UnknownBackend, backend_names, get_backend
from session.loader import load_session
from session.rolespec import RoleSpecFrontmatter
from session.safepath import UnsafePath
from tests.orders import PY, RecordingHooks, make_order, order_for
from tests.sessions import write_session

BACKEND = CommandBackend()


def agent(tmp_path: Path, code: str, name: str = "agent.py") -> list[str]:
    """Write a Python agent script and return the argv that runs it."""
    path = tmp_path / name
    path.write_text("import json, os, sys\nfrom pathlib import Path\n" + textwrap.dedent(code))
    return [PY, str(path)]


def session_dir(tmp_path: Path, name: str = "S") -> Path:
    return write_session(tmp_path / name, {"worker": "T"}, {"T-001": []})


def run(order, hooks=None, cancel=None):
    return BACKEND.run(order, hooks or RecordingHooks(), cancel or threading.Event())


def frontmatter(**extra: object) -> RoleSpecFrontmatter:
    return RoleSpecFrontmatter.model_validate(
        {"role": "worker", "prefix": "T", "inner_loop": False, "message_types": {"success": "done"}, **extra}
    )


# --------------------------------------------------------------------------- placeholders


def test_substitute_fills_known_placeholders_once_and_leaves_everything_else_alone():
    values = {"task_id": "T-001", "prompt_file": "/p/{role}.md", "session": "/s", "artifacts": "/s/a", "role": "qa"}
    assert substitute("{task_id}:{role}", values) == "T-001:qa"
    assert substitute("{prompt_file}", values) == "/p/{role}.md"  # a value is never substituted again
    assert (
        substitute("{unknown} {0} {} {{task_id}} %s $(rm -rf /)", values) == "{unknown} {0} {} {T-001} %s $(rm -rf /)"
    )


def test_placeholders_are_substituted_and_user_text_reaches_the_agent_literally(tmp_path):
    # The folder name holds a placeholder and shell syntax: it must arrive as it is.
    folder = write_session(
        tmp_path / "S {role} $(touch PWNED)",
        {"worker": "T"},
        {"T-001": []},
        capabilities=[
            {
                "name": "worker",
                "prefix": "T",
                "tasks": [{"id": "T-001", "goal": "Handle {braces} and $(rm -rf /) and `touch PWNED2` literally"}],
            }
        ],
    )
    session = load_session(folder)
    argv = agent(
        tmp_path,
        """
        prompt = Path(sys.argv[5]).read_text()
        purpose = next(line for line in prompt.splitlines() if line.startswith("PURPOSE:"))
        Path(os.environ["TEAM_EXECUTOR_SESSION"], "argv.json").write_text(json.dumps([sys.argv[1:], purpose]))
        """,
    )
    command = [*argv, "{task_id}", "{role}", "{session}", "{artifacts}", "{prompt_file}", "{nope} $(rm -rf /) ; `id`"]
    order = order_for(session, "T-001", command=command)

    result = run(order)

    assert result.ok, result
    args, purpose = json.loads((folder / "argv.json").read_text())
    root = str(folder.resolve())
    assert args == ["T-001", "worker", root, f"{root}/artifacts", order.prompt_file, "{nope} $(rm -rf /) ; `id`"]
    assert purpose.startswith("PURPOSE: Handle {braces} and $(rm -rf /) and `touch PWNED2` literally | Success:")
    assert not list(tmp_path.rglob("PWNED*"))


# --------------------------------------------------------------------------- environment


def test_the_agent_sees_the_allowlist_and_its_own_variables_but_no_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-should-not-leak")
    monkeypatch.setenv("LC_TEST_LOCALE", "kept")
    folder = session_dir(tmp_path)
    argv = agent(tmp_path, 'Path("env.json").write_text(json.dumps(dict(os.environ)))\n')
    order = make_order(folder, "T-001", "worker", command=argv, attempt=3)

    assert run(order).ok
    env = json.loads((folder / "env.json").read_text())  # cwd is the work order's workdir
    assert "OPENAI_API_KEY" not in env
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert not any("should-not-leak" in value for value in env.values())
    assert env["LC_TEST_LOCALE"] == "kept"
    assert env["PATH"] == os.environ["PATH"]
    assert {name: value for name, value in env.items() if name.startswith("TEAM_EXECUTOR_")} == {
        "TEAM_EXECUTOR_TASK_ID": "T-001",
        "TEAM_EXECUTOR_ATTEMPT": "3",
        "TEAM_EXECUTOR_ROLE": "worker",
        "TEAM_EXECUTOR_SESSION": order.session_dir,
        "TEAM_EXECUTOR_ARTIFACTS": order.artifacts_dir,
        "TEAM_EXECUTOR_PROMPT_FILE": order.prompt_file,
        "TEAM_EXECUTOR_REPORT": order.report_file,
        "TEAM_EXECUTOR_MARKER": order.marker,
    }


# --------------------------------------------------------------------------- progress


def test_progress_lines_reach_the_hooks_and_anything_else_is_ignored(tmp_path):
    folder = session_dir(tmp_path)
    argv = agent(
        tmp_path,
        """
        lines = [
            json.dumps({"type": "progress", "percent": 10, "note": "reading"}),
            "{not json at all",
            "[1, 2, 3]",
            json.dumps({"type": "other", "percent": 50}),
            json.dumps({"type": "progress", "percent": 250, "note": "too far"}),
            json.dumps({"type": "progress", "percent": 42.9, "note": 7}),
            json.dumps({"type": "progress", "percent": "half", "note": "n" * 1000}),
            json.dumps({"type": "progress", "percent": True}),
            "  " + json.dumps({"type": "progress", "percent": -5, "note": "indented"}) + "  ",
            "{" * 100000,
            "plain text",
        ]
        for line in lines:
            print(line, flush=True)
        print("pid", os.getpid())
        """,
    )
    hooks = RecordingHooks()
    order = make_order(folder, "T-001", "worker", command=argv)
    result = run(order, hooks)

    assert result.ok, result
    assert hooks.progress_calls == [
        (10, "reading"),
        (100, "too far"),
        (42, ""),
        (None, "n" * 300),
        (None, ""),
        (0, "indented"),
    ]
    assert len(hooks.started_calls) == 1
    pid, create_time = hooks.started_calls[0]
    assert f"pid {pid}" in Path(order.log_path).read_text()
    assert create_time is not None


# --------------------------------------------------------------------------- the report


REPORTS = {
    "completed": (
        {"status": "completed", "summary": "all  done\nnicely", "files_modified": ["src/a.py", 3]},
        {"ok": True, "outcome": "completed", "summary": "all done nicely", "files_modified": ("src/a.py",)},
    ),
    "consensus_blocked": (
        {"status": "consensus_blocked", "summary": "reviewers disagree", "severity": "HIGH", "detail": "API shape"},
        {"ok": True, "outcome": "consensus_blocked", "severity": "HIGH", "detail": "API shape", "error_kind": None},
    ),
    "capability_gap": (
        {"status": "capability_gap", "summary": "needs a DBA", "severity": "MEDIUM", "detail": "no dba role"},
        {"ok": True, "outcome": "capability_gap", "severity": "MEDIUM", "detail": "no dba role"},
    ),
    "failed": (
        {"status": "failed", "summary": "tests do not pass"},
        {"ok": False, "outcome": "failed", "error_kind": "crash", "error": "tests do not pass", "exit_code": 0},
    ),
    "no status": ({"summary": "fine"}, {"ok": True, "outcome": "completed", "summary": "fine"}),
}


@pytest.mark.parametrize("variant", sorted(REPORTS))
def test_report_file_variants_map_to_results(tmp_path, variant):
    report, expected = REPORTS[variant]
    folder = session_dir(tmp_path)
    argv = agent(tmp_path, f"Path(os.environ['TEAM_EXECUTOR_REPORT']).write_text({json.dumps(report)!r})\n")
    result = run(make_order(folder, "T-001", "worker", command=argv))
    for field, value in expected.items():
        assert getattr(result, field) == value, (field, result)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"status": "completed", ', "is not valid JSON: Expecting property name enclosed in double quotes at line 1"),
        ('["completed"]', "must hold a JSON object, got list"),
        ('{"status": "finished"}', "has status 'finished'; use one of: completed, failed"),
        ("\udcff", "is not UTF-8"),
    ],
)
def test_an_unreadable_report_is_bad_output_naming_the_file(tmp_path, content, message):
    folder = session_dir(tmp_path)
    argv = agent(
        tmp_path,
        f"Path(os.environ['TEAM_EXECUTOR_REPORT']).write_bytes({content!r}.encode('utf-8', 'surrogateescape'))\n"
        "print('[worker] I think I am done')\n",
    )
    order = make_order(folder, "T-001", "worker", command=argv)
    result = run(order)
    assert not result.ok
    assert result.error_kind == "bad_output"
    assert order.report_file in result.error
    assert message in result.error
    assert result.summary == "[worker] I think I am done"


def test_a_stale_report_from_an_earlier_run_is_deleted_before_the_start(tmp_path):
    folder = session_dir(tmp_path)
    order = make_order(folder, "T-001", "worker", command=agent(tmp_path, "print('[worker] ok')\n"))
    Path(order.report_file).parent.mkdir(parents=True, exist_ok=True)
    Path(order.report_file).write_text('{"status": "failed", "summary": "old news"}')
    result = run(order)
    assert result.ok
    assert result.summary == "[worker] ok"
    assert not Path(order.report_file).exists()


# --------------------------------------------------------------------------- artifacts and summary


def test_without_a_report_artifacts_are_the_task_files_under_artifacts(tmp_path):
    folder = session_dir(tmp_path)
    argv = agent(
        tmp_path,
        """
        art = Path(os.environ["TEAM_EXECUTOR_ARTIFACTS"])
        (art / "T-001-output.md").write_text("mine")
        (art / "T-001").mkdir()
        (art / "T-001" / "b.txt").write_text("mine too")
        (art / "T-001" / "sub").mkdir()
        (art / "T-001" / "sub" / "a.txt").write_text("mine as well")
        (art / "T-0010-other.md").write_text("another task's")
        (art / "OTHER-001.md").write_text("another task's")
        os.symlink("/etc/hostname", art / "T-001-link.md")
        print("[worker] T-001 done: wrote three files")
        print("Tasks unblocked: none. Ready for next stage.")
        """,
    )
    result = run(make_order(folder, "T-001", "worker", command=argv))
    assert result.ok
    assert result.artifacts == ("artifacts/T-001-output.md", "artifacts/T-001/b.txt", "artifacts/T-001/sub/a.txt")
    assert result.summary == "[worker] T-001 done: wrote three files"


def test_report_artifacts_are_kept_only_inside_the_session_folder(tmp_path):
    folder = session_dir(tmp_path)
    listed = [
        "artifacts/T-001-a.md",
        "./artifacts/T-001-b.md",
        str(folder.resolve() / "artifacts" / "T-001-c.md"),
        "/etc/passwd",
        "../outside.md",
        "artifacts/../../outside.md",
        "",
        42,
        "artifacts/T-001-a.md",
    ]
    report = json.dumps({"status": "completed", "artifacts": listed})
    argv = agent(tmp_path, f"Path(os.environ['TEAM_EXECUTOR_REPORT']).write_text({report!r})\n")
    result = run(make_order(folder, "T-001", "worker", command=argv))
    assert result.ok
    assert result.artifacts == ("artifacts/T-001-a.md", "artifacts/T-001-b.md", "artifacts/T-001-c.md")


def test_summary_falls_back_to_the_last_non_empty_output_line_cut_to_300_chars(tmp_path):
    folder = session_dir(tmp_path)
    argv = agent(tmp_path, "print('first'); print('x' * 500); print(); print('   ')\n")
    result = run(make_order(folder, "T-001", "worker", command=argv))
    assert result.ok
    assert result.summary == "x" * 300


# --------------------------------------------------------------------------- failures


def test_a_non_zero_exit_is_a_crash_with_exit_code_and_output_tail(tmp_path):
    folder = session_dir(tmp_path)
    argv = agent(
        tmp_path,
        """
        print("working on it", flush=True)
        print("Traceback: boom", file=sys.stderr, flush=True)
        Path(os.environ["TEAM_EXECUTOR_REPORT"]).write_text('{"status": "completed"}')
        sys.exit(3)
        """,
    )
    result = run(make_order(folder, "T-001", "worker", command=argv))
    assert not result.ok
    assert result.error_kind == "crash"
    assert result.exit_code == 3
    assert "3" in result.error
    assert "Traceback: boom" in result.output_tail
    assert "working on it" in result.output_tail
    assert result.duration_s > 0


def test_the_output_tail_is_bounded_and_keeps_stderr(tmp_path):
    folder = session_dir(tmp_path)
    argv = agent(
        tmp_path,
        """
        sys.stdout.write("o" * 100000 + "\\nlast stdout line\\n")
        sys.stderr.write("e" * 100000 + "\\nlast stderr line\\n")
        sys.exit(1)
        """,
    )
    result = run(make_order(folder, "T-001", "worker", command=argv))
    assert result.error_kind == "crash"
    assert len(result.output_tail.encode()) <= 4096 + 40
    assert "last stderr line" in result.output_tail
    assert "last stdout line" in result.output_tail


def test_a_missing_program_is_spawn_failed(tmp_path):
    folder = session_dir(tmp_path)
    result = run(make_order(folder, "T-001", "worker", command=[str(tmp_path / "no-such-agent"), "{prompt_file}"]))
    assert not result.ok
    assert result.error_kind == "spawn_failed"
    assert "no-such-agent" in result.error


def test_an_empty_command_is_spawn_failed_naming_the_role_spec(tmp_path):
    result = run(make_order(session_dir(tmp_path), "T-001", "worker", command=[]))
    assert result.error_kind == "spawn_failed"
    assert "role-specs/worker.md" in result.error


def test_the_wall_timeout_stops_the_agent(tmp_path):
    folder = session_dir(tmp_path)
    argv = agent(tmp_path, "import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    result = run(make_order(folder, "T-001", "worker", command=argv, timeout_s=0.5, grace_s=0.5))
    assert not result.ok
    assert result.error_kind == "timeout"
    assert result.duration_s < 30


def test_a_set_cancel_event_interrupts_the_agent(tmp_path):
    folder = session_dir(tmp_path)
    cancel = threading.Event()
    argv = agent(tmp_path, "import time\nprint('started', flush=True)\ntime.sleep(60)\n")

    class CancelOnStart(RecordingHooks):
        def started(self, pid, create_time):
            super().started(pid, create_time)
            cancel.set()

    result = run(make_order(folder, "T-001", "worker", command=argv, grace_s=0.5), CancelOnStart(), cancel)
    assert result.error_kind == "interrupted"


# --------------------------------------------------------------------------- preflight and registry


def test_preflight_explains_a_missing_command():
    message = BACKEND.preflight("coder", frontmatter())
    assert message is not None
    assert message.startswith("role-specs/coder.md: 'command' is missing; add e.g. command: [")
    assert "{prompt_file}" in message
    assert "choose another backend" in message
    assert BACKEND.preflight("coder", frontmatter(command=[])) == message


def test_preflight_names_a_program_that_cannot_be_found(tmp_path):
    message = BACKEND.preflight("coder", frontmatter(command=["surely-not-an-agent-cli-xyz", "{prompt_file}"]))
    assert message is not None
    assert "'surely-not-an-agent-cli-xyz' was not found on PATH" in message

    missing = tmp_path / "missing-agent"
    message = BACKEND.preflight("coder", frontmatter(command=[str(missing)]))
    assert message is not None
    assert str(missing) in message

    not_executable = tmp_path / "agent.sh"
    not_executable.write_text("#!/bin/sh\n")
    message = BACKEND.preflight("coder", frontmatter(command=[str(not_executable)]))
    assert message is not None
    assert "chmod +x" in message


def test_preflight_accepts_programs_it_can_find_or_cannot_check(tmp_path):
    script = tmp_path / "agent.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    assert BACKEND.preflight("coder", frontmatter(command=[PY, "agent.py"])) is None
    assert BACKEND.preflight("coder", frontmatter(command=["sh", "-c", "true"])) is None
    assert BACKEND.preflight("coder", frontmatter(command=[str(script)])) is None
    assert BACKEND.preflight("coder", frontmatter(command=["./bin/agent"])) is None  # resolved in the workdir
    assert BACKEND.preflight("coder", frontmatter(command=["{session}/agent.sh"])) is None


def test_registry_knows_every_backend_and_names_the_choices_for_anything_else():
    names = ["aider", "claude", "codex", "command", "demo", "gemini", "manual", "mcp", "openai", "opencode", "qwen"]
    assert backend_names() == names
    assert isinstance(get_backend("command"), CommandBackend)
    assert isinstance(get_backend("demo"), DemoBackend)
    assert all(name == backend.name for name, backend in BACKENDS.items())
    with pytest.raises(UnknownBackend) as caught:
        get_backend("claude-code")
    assert str(caught.value) == f"unknown backend 'claude-code'; choose one of: {', '.join(names)}"
    assert caught.value.choices == names
    assert caught.value.name == "claude-code"


def test_a_task_id_outside_the_grammar_never_reaches_the_command(tmp_path):
    # A row from a store written before the grammar existed: the command is not started.
    session = session_dir(tmp_path)
    marker = tmp_path / "PWNED"
    order = make_order(session, "T-001", "coder", command=["sh", "-c", "echo {task_id}"])
    hostile = msgspec.structs.replace(order, task_id=f"T-$(touch {marker})")
    with pytest.raises(UnsafePath, match="cannot go into a command"):
        order_argv(hostile)
    assert order_argv(order) == ("sh", "-c", "echo T-001")
    assert not marker.exists()


# --------------------------------------------------------------------------- niceness


def test_the_agent_runs_at_the_order_s_niceness_and_so_does_what_it_starts(tmp_path):
    # Agents yield the CPU to the executor and its bridge on a busy machine: the niceness is set
    # before the program runs (the child is still the cgroup wrapper), so its children have it too.
    session = load_session(session_dir(tmp_path))
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    for attempt, nice in ((1, 0), (2, 7)):
        order = order_for(session, "T-001", attempt=attempt, command=["sh", "-c", "nice; sh -c nice"])
        order = msgspec.structs.replace(order, nice=nice)
        result = run(order)
        assert result.ok, result
        assert Path(order.log_path).read_text().split() == [str(min(19, mine + nice))] * 2


def test_agent_nice_in_executor_toml_reaches_the_agent(tmp_path):
    from tests.conftest import run_executor  # noqa: PLC0415

    folder = session_dir(tmp_path)
    (folder / "role-specs" / "worker.md").write_text(
        (folder / "role-specs" / "worker.md")
        .read_text()
        .replace("---\n", '---\nbackend: command\ncommand: ["nice"]\n', 1)
    )
    (folder / "executor.toml").write_text("[run]\nagent_nice = 3\n")
    done = run_executor("run", "--session", str(folder))
    assert done.returncode == 0, done.stderr
    (log,) = (folder / ".executor" / "logs").glob("T-001-a1.log")
    assert log.read_text().split() == [str(min(19, os.getpriority(os.PRIO_PROCESS, 0) + 3))]
