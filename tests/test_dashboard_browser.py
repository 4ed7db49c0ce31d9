"""The dashboard in headless Chromium (Playwright driving Debian's chromium) during the story demo
(`executor demo`'s project and session): the graph fills in live, a question is answered with a
click, the drawer shows the failed gate and the review round, and screenshots are kept."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from cli.demo_cmd import prepare_demo
from tests.sessions import REPO
from tests.test_mcp_bridge import RunningBridge

playwright_api = pytest.importorskip("playwright.sync_api")

ARTIFACTS = Path(os.environ.get("TEAM_EXECUTOR_TEST_ARTIFACTS", REPO / "test-artifacts"))
ORDER = ["PLAN-001", "IMPL-001", "REVIEW-001"]


def _chromium() -> str:
    found = os.environ.get("TEAM_EXECUTOR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("no chromium on this machine (.ci/run installs Debian's; or set TEAM_EXECUTOR_CHROMIUM)")
    return found


def _node(task_id: str) -> str:
    return f'svg#graph g.node[data-task-id="{task_id}"]'


def test_the_dashboard_follows_a_demo_run_and_answers_a_question_with_a_click(tmp_path: Path) -> None:
    chromium = _chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    setup = prepare_demo(tmp_path / "textkit")  # what `executor demo` runs: a git project and its session
    assert setup.project is not None, setup.note
    folder = setup.session
    # Each demo task takes ~1.5 s, so the page sees the graph fill in rather than a finished run.
    bridge = RunningBridge(folder, "--retry-backoff", "0.2", env={"TEAM_EXECUTOR_DEMO_PACE_S": "1.5"})
    try:
        question = bridge.call(
            "escalate_decision",
            {"issue": "Review the demo's change now?", "options": ["go ahead", "skip it"], "task_id": "REVIEW-001"},
        )
        assert not question.is_error, question.content
        escalation_id = question.structured_content["id"]
        base = bridge.url.removesuffix("/mcp")
        problems: list[str] = []
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.goto(f"{base}/?token={bridge.token}")
            assert "token=" not in page.url, "the sign-in link is swapped for a cookie at once"
            page.wait_for_selector(_node("REVIEW-001"), timeout=15_000)
            first_seen = {task: page.get_attribute(_node(task), "data-status") for task in ORDER}
            assert any(status != "completed" for status in first_seen.values()), first_seen

            # Live: the nodes turn to done as the run goes, without reloading the page.
            page.wait_for_selector(f'{_node("IMPL-001")}[data-status="completed"]', timeout=60_000)
            assert page.get_attribute(_node("REVIEW-001"), "data-status") == "pending", "held by the question"
            button = page.locator(
                f'#escalations .escalation[data-escalation-id="{escalation_id}"] button[data-choice="go ahead"]'
            )
            button.wait_for(timeout=15_000)
            page.screenshot(path=str(ARTIFACTS / "dashboard-question-open.png"), full_page=True)
            button.click()
            # The review sends IMPL-001 back once, then passes: only then is the review completed.
            page.wait_for_selector(f'{_node("REVIEW-001")}[data-status="completed"]', timeout=60_000)
            page.locator(f'#escalations .escalation[data-escalation-id="{escalation_id}"]').wait_for(
                state="detached", timeout=15_000
            )
            for task in ORDER:
                assert page.get_attribute(_node(task), "data-status") == "completed", task

            # The drawer: a node's click shows its runs (the failed gate among them), log tail and artifacts.
            page.click(_node("IMPL-001"))
            page.wait_for_selector("#drawer:not([hidden])", timeout=10_000)
            page.wait_for_selector("#drawer:has-text('gate_failed')", timeout=15_000)
            drawer = page.inner_text("#drawer")
            assert "IMPL-001" in drawer
            assert "demo" in drawer
            page.screenshot(path=str(ARTIFACTS / "dashboard-done.png"), full_page=True)

            # The diff view: the files the coder changed, with coloured added lines, never markup.
            page.wait_for_selector('#drawer-diff .diff-file[data-path="textkit/text.py"]', timeout=15_000)
            assert page.locator("#drawer-diff .diff-patch .dl-add").count() > 0
            assert "textkit/text.py" in page.inner_text("#drawer-diff .diff-patch")
            assert page.locator("#diff-attempt option").count() >= 3, "one choice per attempt, and all of them"
            # Artifacts are rendered Markdown; hostile Markdown stays text (no markup, no script links).
            page.click('#drawer-artifacts .artifact-link[data-path="artifacts/IMPL-001-impl.md"]')
            page.wait_for_selector("#artifact-view .md", timeout=10_000)
            hostile = page.evaluate(
                "(() => { const n = window.TEViews.renderMarkdown("
                "'# T\\n<img src=x onerror=alert(1)> [a](javascript:alert(1)) **b** [c](https://e.example)');"
                " return [n.querySelectorAll('img').length, n.querySelectorAll('a').length,"
                " n.querySelector('a').getAttribute('href'), n.querySelectorAll('h4, strong').length,"
                " n.textContent.includes('<img')]; })()"
            )
            assert hostile == [0, 1, "https://e.example", 2, True], hostile
            patch = page.evaluate(
                "(() => { const box = document.createElement('div'); window.TEViews.renderDiff(box, {added: 1,"
                " removed: 0, files: [{path: '<b>x</b>', status: 'A', added: 1, removed: 0}],"
                " patch: 'diff --git a/<b>x</b> b/<b>x</b>\\n+<script>alert(1)</script>\\u001b[31mred\\u0007\\n'});"
                " return [box.querySelectorAll('b, script').length, box.querySelector('.dl-add').textContent]; })()"
            )
            assert patch == [0, "+<script>alert(1)</script>red\u2407\n"], patch
            # The log view follows the task's log over server-sent events.
            page.wait_for_selector("#log-tail .log-line", timeout=15_000)
            page.locator("#drawer-diff").scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "dashboard-diff.png"))
            page.select_option("#diff-attempt", "1")  # the first attempt alone: the one the gate failed
            page.wait_for_selector("#diff-note:text-is('(attempt 1)')", timeout=10_000)
            page.wait_for_selector('#drawer-diff .diff-file[data-path="textkit/text.py"]', timeout=10_000)

            # The timeline: IMPL-001's three attempts in order, the failed gate first.
            bars = '#timeline g.tl-row[data-task-id="IMPL-001"] rect.tl-bar'
            # (a CSS wait: the page's CSP forbids the eval that a polled wait_for_function needs)
            page.wait_for_selector(f'{bars}[data-attempt="3"][data-outcome="completed"]', timeout=20_000)
            attempts = page.eval_on_selector_all(
                bars, "els => els.map(e => [e.dataset.attempt, e.dataset.outcome, e.textContent])"
            )
            assert [a[0] for a in attempts] == ["1", "2", "3"], attempts
            assert [a[1] for a in attempts] == ["failed", "completed", "completed"], attempts
            assert "gate_failed" in attempts[0][2], attempts
            rows = page.eval_on_selector_all("#timeline g.tl-row", "els => els.map(e => e.dataset.taskId)")
            assert rows == ORDER, rows  # pipeline order
            assert page.locator('#timeline g.tl-row[data-task-id="REVIEW-001"] .tl-question').count() == 1

            page.click("#drawer-close")
            page.select_option("#timeline-by", "worker")  # the same attempts, one row per worker
            assert page.locator("#timeline g.tl-worker rect.tl-bar").count() == 6  # 1 + 3 + 2 attempts
            page.locator('#timeline g.tl-worker rect.tl-bar[data-outcome="failed"]').click()
            page.wait_for_selector('#drawer[data-task-id="IMPL-001"]', timeout=10_000)
            page.select_option("#timeline-by", "task")

            page.click(_node("REVIEW-001"))
            page.wait_for_selector("#drawer:has-text('changes_requested')", timeout=15_000)
            page.click("#drawer-close")
            page.locator("#timeline-panel").screenshot(path=str(ARTIFACTS / "dashboard-timeline.png"))

            # A phone-sized window: no sideways scrolling of the page itself.
            page.set_viewport_size({"width": 420, "height": 900})
            page.click(_node("IMPL-001"))
            page.wait_for_selector('#drawer-diff .diff-file[data-path="textkit/text.py"]', timeout=15_000)
            page.locator("#drawer-diff").scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "dashboard-narrow-drawer.png"))
            page.click("#drawer-close")
            width = page.evaluate("document.documentElement.scrollWidth")
            wide = page.evaluate(
                "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 421)"
                ".slice(0, 8).map(e => e.tagName + '#' + e.id + '.' + e.className)"
            )
            assert width <= 420, (width, wide)
            page.screenshot(path=str(ARTIFACTS / "dashboard-narrow.png"), full_page=True)
            browser.close()
        assert not problems, problems  # no script errors, no Content-Security-Policy violations

        answered = bridge.call("list_escalations", {"status": "answered"}).structured_content["escalations"]
        assert [(row["id"], row["choice"], row["answered_by"]) for row in answered] == [
            (escalation_id, "go ahead", "web")
        ]
    finally:
        output = bridge.stop()
    assert (ARTIFACTS / "dashboard-done.png").stat().st_size > 10_000, output[-2000:]
    for shot in ("dashboard-done", "dashboard-diff", "dashboard-timeline", "dashboard-narrow"):
        assert time.time() - (ARTIFACTS / f"{shot}.png").stat().st_mtime < 600, shot
