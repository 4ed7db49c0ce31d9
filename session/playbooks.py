"""The built-in playbooks: each a named collaboration pattern of roles, tasks and default backends.

One table, kept whole on purpose: the playbooks share task shapes (implement, review) and
read best side by side.  :mod:`session.templates` writes a session folder from one.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_PLAYBOOK",
    "PLAYBOOKS",
    "ROLE_FLAGS",
    "TEMPLATES",
    "TEMPLATE_ALIASES",
    "InitError",
    "Template",
    "TemplateTask",
    "describe_playbooks",
    "find_playbook",
]

_DEFAULT_CONSTRAINTS = "Stay within the session's scope"

#: The per-role backend options of ``executor init`` and the roles each one sets.
ROLE_FLAGS: dict[str, tuple[str, ...]] = {
    "writer": ("coder", "alt-coder"),
    "reviewer": ("reviewer",),
    "redteam": ("redteam",),
    "adjudicator": ("adjudicator",),
}


class InitError(Exception):
    """The session cannot be created as asked; the message says why and what to do."""


@dataclass(frozen=True)
class TemplateTask:
    id: str
    role: str
    goal: str  # "{goal}" is replaced by the user's goal
    steps: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    priority: str = "P1"
    artifact: str = ""
    # Earlier tasks (already done, through depends_on) whose artifacts this task reads too.
    reads: tuple[str, ...] = ()
    constraints: str = _DEFAULT_CONSTRAINTS
    success: str = ""  # default: "<artifact> written and complete"


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    tasks: tuple[TemplateTask, ...]
    # role -> backend written into the session's role-spec when the user names none.
    default_backends: Mapping[str, str] = field(default_factory=dict)
    # role -> frontmatter lines added to the session's role-spec (e.g. "isolation: worktree").
    role_settings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(task.role for task in self.tasks))


_TESTS_FIRST = "Write tests for the new behaviour first, then the code"
_RUN_CHECKS = "Run the full test suite and the linters; record commands and results"
_VERDICT = "Give a verdict (pass or changes_requested) with numbered, actionable items"

_IMPL = TemplateTask(
    id="IMPL-001",
    role="coder",
    goal="Implement: {goal}",
    steps=(
        "Read the code the goal touches and its tests; note the project's conventions",
        "Work out what done means: the behaviours and edge cases to cover",
        _TESTS_FIRST,
        _RUN_CHECKS,
    ),
    priority="P0",
    artifact="artifacts/IMPL-001-impl.md",
)
_REVIEW_OF_IMPL = TemplateTask(
    id="REVIEW-001",
    role="reviewer",
    goal="Review the implementation of: {goal}",
    steps=(
        "Read IMPL-001's summary and the diff (git diff / git status)",
        "Check correctness against the goal, edge cases included",
        "Check the tests cover the behaviour and its error paths; run them read-only",
        _VERDICT,
    ),
    depends_on=("IMPL-001",),
    artifact="artifacts/REVIEW-001-review.md",
    constraints="Read-only: never edit project files; write only the review artifact and wisdom notes",
)
_WRITE_REVIEW_TASKS = (
    TemplateTask(
        id=_IMPL.id,
        role=_IMPL.role,
        goal=_IMPL.goal,
        steps=(*_IMPL.steps, "Summarize the change for the reviewer: files, decisions, how to verify"),
        priority=_IMPL.priority,
        artifact=_IMPL.artifact,
    ),
    _REVIEW_OF_IMPL,
)

TEMPLATES: dict[str, Template] = {
    template.name: template
    for template in (
        Template(
            name="single_worker",
            description="one coder does the whole goal, no review",
            tasks=(_IMPL,),
        ),
        Template(
            name="write_review",
            description="a coder writes, then a reviewer on another backend reviews: codex writes, gemini reviews",
            tasks=_WRITE_REVIEW_TASKS,
            default_backends={"coder": "codex", "reviewer": "gemini"},
        ),
        Template(
            name="review_write",
            description="write_review with the backends swapped: gemini writes, codex reviews",
            tasks=_WRITE_REVIEW_TASKS,
            default_backends={"coder": "gemini", "reviewer": "codex"},
        ),
        Template(
            name="review_first",
            description="the reviewer plans and sets acceptance criteria, the coder implements, the reviewer checks",
            tasks=(
                TemplateTask(
                    id="REVIEW-001",
                    role="reviewer",
                    goal="Review the goal and write the plan and acceptance criteria for: {goal}",
                    steps=(
                        "There is no change to review yet: read the code and tests the goal touches",
                        "Restate the goal, its scope and its non-goals",
                        "Write acceptance criteria AC1..ACn, each checkable by a command or a test",
                        "List the risks and the checklist you will apply to the implementation",
                    ),
                    priority="P0",
                    artifact="artifacts/REVIEW-001-plan.md",
                    constraints=(
                        "Read-only: write only the plan artifact and wisdom notes; "
                        "the verdict is pass when the goal is clear enough to implement"
                    ),
                    success="artifacts/REVIEW-001-plan.md lists scope, acceptance criteria and risks",
                ),
                TemplateTask(
                    id="IMPL-001",
                    role="coder",
                    goal="Implement, meeting the reviewer's acceptance criteria: {goal}",
                    steps=(
                        "Read REVIEW-001's plan: its acceptance criteria are your checklist",
                        "Write a test for each acceptance criterion first, then the code",
                        _RUN_CHECKS,
                        "Record in the artifact how each acceptance criterion is met",
                    ),
                    depends_on=("REVIEW-001",),
                    artifact="artifacts/IMPL-001-impl.md",
                ),
                TemplateTask(
                    id="REVIEW-002",
                    role="reviewer",
                    goal="Check the implementation against the agreed plan for: {goal}",
                    steps=(
                        "Re-read your plan (REVIEW-001) and IMPL-001's summary",
                        "Check every acceptance criterion with evidence: a command and its result",
                        "Review the diff for correctness, tests and conventions",
                        _VERDICT,
                    ),
                    depends_on=("IMPL-001",),
                    reads=("REVIEW-001",),
                    artifact="artifacts/REVIEW-002-review.md",
                    constraints=_REVIEW_OF_IMPL.constraints,
                ),
            ),
            default_backends={"coder": "codex", "reviewer": "gemini"},
        ),
        Template(
            name="parallel_dual_write_review",
            description="two coders implement the goal in parallel; an adjudicator keeps the better one or merges",
            tasks=(
                TemplateTask(
                    id="IMPL-001",
                    role="coder",
                    goal="Implement (candidate A of two): {goal}",
                    steps=(*_IMPL.steps, "Summarize the approach, files changed and test results for the adjudicator"),
                    priority="P0",
                    artifact="artifacts/IMPL-001-impl.md",
                    constraints=(
                        "You work in a git worktree of your own on branch team-executor/IMPL-001; ALT-001 implements "
                        "the same goal at the same time in another: do not read or touch it"
                    ),
                ),
                TemplateTask(
                    id="ALT-001",
                    role="alt-coder",
                    goal="Implement independently (candidate B of two): {goal}",
                    steps=(
                        "Work in your worktree (branch team-executor/ALT-001); do not read IMPL-001's work",
                        _TESTS_FIRST,
                        "Run the tests and linters in your worktree",
                        "Summarize the approach, the files changed and the test results",
                    ),
                    priority="P0",
                    artifact="artifacts/ALT-001-impl.md",
                    constraints="Do not read IMPL-001's branch or worktree: the comparison needs two independent takes",
                ),
                TemplateTask(
                    id="JUDGE-001",
                    role="adjudicator",
                    goal="Compare the two implementations of: {goal}; keep the better one or merge them",
                    steps=(
                        "Fix the criteria and their weights before scoring either candidate",
                        "Run the same tests and probes on both branches, each in its worktree",
                        "Choose impl, alt or merge, and git merge the result into the project tree",
                        "Record the verdict, the criteria table and the reasons in the artifact",
                    ),
                    depends_on=("IMPL-001", "ALT-001"),
                    artifact="artifacts/JUDGE-001-decision.md",
                    constraints="Change the project tree only to apply the decision (merge the chosen branch)",
                    success="artifacts/JUDGE-001-decision.md gives the verdict, the criteria table and the reasons",
                ),
            ),
            default_backends={"coder": "codex", "alt-coder": "claude", "adjudicator": "gemini"},
            role_settings={"coder": ("isolation: worktree",), "alt-coder": ("isolation: worktree",)},
        ),
        Template(
            name="security_redteam_pass",
            description="a coder writes, a red team attacks it, the coder fixes the findings, a reviewer checks",
            tasks=(
                TemplateTask(
                    id="IMPL-001",
                    role="coder",
                    goal="Implement: {goal}",
                    steps=(*_IMPL.steps, "List the entry points and inputs the change adds, for the red team"),
                    priority="P0",
                    artifact="artifacts/IMPL-001-impl.md",
                ),
                TemplateTask(
                    id="REDTEAM-001",
                    role="redteam",
                    goal="Attack the change made for: {goal}",
                    steps=(
                        "Map the attack surface IMPL-001 added or changed",
                        "Try injection, input abuse, resource exhaustion and leaks against it",
                        "Confirm each finding with a reproduction you ran; mark the rest suspected",
                        "Rank the findings by severity, each with a remediation",
                    ),
                    depends_on=("IMPL-001",),
                    artifact="artifacts/REDTEAM-001-redteam-report.md",
                    constraints=(
                        "Read-only: probes live in a temporary directory outside the project; "
                        "touch no real service, network or credential"
                    ),
                ),
                TemplateTask(
                    id="IMPL-002",
                    role="coder",
                    goal="Fix the red team's findings on: {goal}",
                    steps=(
                        "Treat REDTEAM-001's numbered findings as your checklist",
                        "Write a failing test that reproduces each confirmed finding first",
                        "Fix each finding, or record why it is not fixed",
                        _RUN_CHECKS,
                    ),
                    depends_on=("REDTEAM-001",),
                    reads=("IMPL-001",),
                    artifact="artifacts/IMPL-002-impl.md",
                ),
                TemplateTask(
                    id="REVIEW-001",
                    role="reviewer",
                    goal="Review the hardened change for: {goal}",
                    steps=(
                        "Read IMPL-001, REDTEAM-001 and IMPL-002's artifacts and the diff",
                        "Check every finding is fixed with a test, or its deferral is justified",
                        "Review correctness, tests and conventions",
                        _VERDICT,
                    ),
                    depends_on=("IMPL-002",),
                    reads=("IMPL-001", "REDTEAM-001"),
                    artifact="artifacts/REVIEW-001-review.md",
                    constraints=_REVIEW_OF_IMPL.constraints,
                ),
            ),
            default_backends={"coder": "codex", "redteam": "claude", "reviewer": "gemini"},
        ),
        Template(
            name="pm_architect_coder_qa",
            description="plan, design, implement and test: the classic four-role pipeline",
            tasks=(
                TemplateTask(
                    id="PLAN-001",
                    role="pm",
                    goal="Write the plan for: {goal}",
                    steps=("Clarify scope and non-goals", "Split the work into milestones", "List acceptance criteria"),
                    priority="P0",
                    artifact="artifacts/PLAN-001-plan.md",
                ),
                TemplateTask(
                    id="ARCH-001",
                    role="architect",
                    goal="Design the solution for: {goal}",
                    steps=("Read the plan", "Choose modules and interfaces", "Record decisions and risks"),
                    depends_on=("PLAN-001",),
                    artifact="artifacts/ARCH-001-design.md",
                ),
                TemplateTask(
                    id="IMPL-001",
                    role="coder",
                    goal="Implement: {goal}",
                    steps=("Follow the design", "Write tests first", "Keep changes small and reviewed"),
                    depends_on=("ARCH-001",),
                    artifact="artifacts/IMPL-001-changes.md",
                ),
                TemplateTask(
                    id="QA-001",
                    role="qa",
                    goal="Verify the implementation of: {goal}",
                    steps=("Run the tests", "Check the acceptance criteria", "Report defects with reproductions"),
                    depends_on=("IMPL-001",),
                    artifact="artifacts/QA-001-report.md",
                ),
            ),
        ),
    )
}
#: Playbooks and templates are the same thing; "playbook" is the name ``executor init`` uses.
PLAYBOOKS = TEMPLATES
DEFAULT_PLAYBOOK = "pm_architect_coder_qa"
#: Older names that still work.
TEMPLATE_ALIASES: dict[str, str] = {"pm-architect-coder-qa": "pm_architect_coder_qa"}


def _aliases_of(name: str) -> list[str]:
    return [alias for alias, target in TEMPLATE_ALIASES.items() if target == name]


def _choices() -> str:
    """Every playbook with its description, on one line; the default (and its old name) first."""
    ordered = [TEMPLATES[DEFAULT_PLAYBOOK], *(t for t in TEMPLATES.values() if t.name != DEFAULT_PLAYBOOK)]
    items = []
    for template in ordered:
        names = " or ".join([*_aliases_of(template.name), template.name])
        default = "; the default" if template.name == DEFAULT_PLAYBOOK else ""
        items.append(f"{names} ({template.description}{default})")
    return ", ".join(items)


def find_playbook(name: str, noun: str = "playbook") -> Template:
    """The playbook called ``name`` (or an old alias of it).  Raises :class:`InitError` listing them all.

    ``noun`` is the word the error uses: ``"template"`` when the user typed ``--template``.
    """
    template = TEMPLATES.get(TEMPLATE_ALIASES.get(name, name))
    if template is None:
        close = difflib.get_close_matches(name, [*TEMPLATES, *TEMPLATE_ALIASES], n=1)
        guess = f"did you mean '{close[0]}'? " if close else ""
        raise InitError(
            f"unknown {noun} '{name}'; {guess}choose one of: {_choices()}. Details: executor init --playbook list"
        )
    return template


def describe_playbooks() -> list[str]:
    """The lines ``executor init --playbook list`` prints: each playbook, its tasks and default backends."""
    lines = ['Playbooks (executor init --session PATH --playbook NAME "goal"):']
    for template in TEMPLATES.values():
        notes = [f"alias {alias}" for alias in _aliases_of(template.name)]
        if template.name == DEFAULT_PLAYBOOK:
            notes.insert(0, "the default")
        title = f"{template.name} ({'; '.join(notes)})" if notes else template.name
        lines += ["", title, f"  {template.description}"]
        steps = []
        for task in template.tasks:
            after = f" after {'+'.join(task.depends_on)}" if task.depends_on else ""
            steps.append(f"{task.id} {task.role}{after}")
        lines.append(f"  tasks: {'; '.join(steps)}")
        if template.default_backends:
            backends = ", ".join(f"{role}={backend}" for role, backend in template.default_backends.items())
        else:
            backends = "none (the run's --backend or config chooses)"
        lines.append(f"  default backends: {backends}")
    flags = ", ".join(f"--{flag} ({'/'.join(roles)})" for flag, roles in ROLE_FLAGS.items())
    lines += [
        "",
        f"Backends: --backend B sets every role; {flags} and --role-backend ROLE=B set one role each.",
        "Order of precedence: playbook default < --backend < --writer/--reviewer/... < --role-backend.",
    ]
    return lines
