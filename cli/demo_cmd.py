"""``executor demo``: a tiny git project, a team that works on it, and what it changed.

The story (examples/story): the shipped ``textkit`` project is copied to
``./demo-run/textkit-N`` and committed once; the team session goes inside it at
``.workflow/.team/<id>`` (git-ignored) and runs on the demo agent, whose story mode
really edits the project: a quality gate (the project's own unittest suite) fails
once, a review asks for one change, and the end shows the diff since the first
commit and where to look.  No key, no network.  Without git the classic demo
(examples/demo, artifacts only) runs instead, and says why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from session.report import CheckReport
from session.resources import builtin_path
from session.worktrees import WorktreeError, commit_all

__all__ = ["DemoRefused", "DemoSetup", "prepare_demo", "print_story_end", "print_story_start"]

SESSION_PARENT = Path(".workflow") / ".team"
_GIT_TIMEOUT_S = 60
_VERIFY_PYTHON = re.compile(r'^(verify:\s*\[\[)"python3"', re.MULTILINE)


@dataclass(frozen=True)
class DemoSetup:
    session: Path  # the session folder to run
    project: Path | None  # the git project the team works on; None for the classic demo
    base: str | None = None  # the project's first commit
    note: str = ""  # why the classic demo runs instead, if it does


class DemoRefused(Exception):
    """The demo cannot start; the message says why and what to do."""


def _git(project: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(project), *args], capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise WorktreeError(f"git {' '.join(args)} in {project}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _free_folder(into: Path | None, stem: str) -> Path:
    if into is not None:
        if into.exists():
            raise DemoRefused(f"{into} already exists; choose another --into folder")
        return into
    number = 1
    while (candidate := Path("demo-run") / f"{stem}-{number}").exists():
        number += 1
    return candidate


def _classic(into: Path | None, note: str) -> DemoSetup:
    folder = _free_folder(into, "TC-demo-slugify")
    shutil.copytree(builtin_path("examples") / "demo", folder, ignore=shutil.ignore_patterns(".executor"))
    return DemoSetup(session=folder, project=None, note=note)


def _use_this_python(role_spec: Path) -> None:
    """The gate runs the project's tests with the executor's own interpreter (no `python3` on PATH needed)."""
    text = role_spec.read_text(encoding="utf-8")
    role_spec.write_text(_VERIFY_PYTHON.sub(lambda m: m.group(1) + json.dumps(sys.executable), text), encoding="utf-8")


def prepare_demo(into: Path | None) -> DemoSetup:
    """Copy the story's project and session into place and commit the project once.

    Raises :class:`DemoRefused` when ``into`` exists."""
    if shutil.which("git") is None:
        return _classic(
            into,
            "git is not installed, so this is the short demo (artifacts only, no project to edit); "
            "install git and run `executor demo` again to see the team change code",
        )
    story = builtin_path("examples") / "story"
    project = _free_folder(into, "textkit")
    ignore = shutil.ignore_patterns(".executor", "__pycache__")
    shutil.copytree(story / "project", project, ignore=ignore)
    os.replace(project / "gitignore", project / ".gitignore")
    try:
        _git(project, "-c", "init.defaultBranch=main", "init", "-q")
        # Local identity: the first commit (and any the user makes here) works without a git config.
        for key, value in (
            ("user.name", "executor demo"),
            ("user.email", "demo@localhost"),
            ("commit.gpgsign", "false"),
        ):
            _git(project, "config", key, value)
        base = commit_all(project, "textkit before the team (executor demo)")
    except (WorktreeError, OSError, subprocess.TimeoutExpired) as error:
        shutil.rmtree(project, ignore_errors=True)
        return _classic(into, f"git could not set up the demo project ({error}), so this is the short demo")
    session = project / SESSION_PARENT / _session_id(story / "session")
    shutil.copytree(story / "session", session, ignore=ignore)
    _use_this_python(session / "role-specs" / "coder.md")
    return DemoSetup(session=session, project=project, base=base)


def _session_id(folder: Path) -> str:
    return str(json.loads((folder / "team-session.json").read_text(encoding="utf-8"))["session_id"])


def _diff(project: Path, base: str) -> tuple[list[str], list[str]]:
    """The diff stat of the project since ``base`` (tracked files) and the files git does not know yet."""
    try:
        stat = _git(project, "diff", "--stat", base).rstrip("\n").splitlines()
        untracked = _git(project, "ls-files", "--others", "--exclude-standard").splitlines()
    except (WorktreeError, OSError, subprocess.TimeoutExpired) as error:
        return [f"(git could not show the diff: {error})"], []
    return stat, untracked


def print_story_start(console: Console, setup: DemoSetup, paced: bool) -> None:
    """Where the demo is, and (when it goes slowly enough to watch) how to watch it."""
    if setup.project is None:
        console.print(f"demo session copied to {escape(str(setup.session))}")
        return
    console.print(f"demo project: {escape(str(setup.project))} (a git repository; the team works in it)")
    console.print(f"its session:  {escape(str(setup.session))}")
    if paced:
        console.print(f"watch it in another terminal: executor watch --session {escape(str(setup.session))}")


def print_story_end(console: Console, setup: DemoSetup, report: CheckReport) -> None:
    """What the team did, what changed in the project, and where to look."""
    console.print("\n[bold]what the team did[/]")
    width = max((len(task.id) for task in report.tasks), default=0)
    for task in report.tasks:
        steps = " → ".join(task.outcomes) or task.status
        rounds = f"  (review rounds: {task.review_rounds})" if task.review_rounds else ""
        console.print(f"  {escape(task.id.ljust(width))}  {escape(task.owner):<9} {escape(steps)}{rounds}")
    session = setup.session
    if setup.project is not None and setup.base is not None:
        stat, untracked = _diff(setup.project, setup.base)
        console.print(f"\n[bold]changed in {escape(str(setup.project))}[/] since its first commit ({setup.base[:7]}):")
        for line in stat or ["  (nothing)"]:
            console.print(f"  {escape(line.strip())}", markup=True)
        for name in untracked:
            console.print(f"  new: {escape(name)}")
    console.print("\n[bold]where to look[/]")
    rows = []
    if setup.project is not None:
        rows.append(("the code the coder wrote", f"git -C {setup.project} diff"))
        feedback = sorted((session / "feedback").glob("*.md"))
        shown = str(feedback[0]) if len(feedback) == 1 else f"{session / 'feedback'}/"
        rows.append(("the failed gate's output, the review's request", shown))
    rows += [
        ("the plan, implementation notes, review", f"{session / 'artifacts'}/"),
        ("every attempt's full output", f"{session / '.executor' / 'logs'}/"),
        ("each task's attempts and review rounds", f"executor check --session {session} --json"),
        ("the live view (while a run goes on)", f"executor watch --session {session}"),
        ("all again, slowly, in a browser", "executor demo --pace 2 --http 8765"),
    ]
    width = max(len(what) for what, _ in rows) + 1
    for what, where in rows:
        console.print(f"  {escape((what + ':').ljust(width))}  {escape(where)}")
