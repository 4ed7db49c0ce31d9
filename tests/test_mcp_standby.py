"""`executor mcp` always completes the handshake (the official SDK client over stdio): a session
that cannot run is served with reads and answers, and the tools that need the run say why;
submit_task with only name, description and priority works on a session of several roles."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

from protocol.records import EscalationRow
from session.store import Store
from tests.conftest import _EMPTY_CONFIG, EXECUTOR, run_executor

ENV = {**os.environ, "TEAM_EXECUTOR_CONFIG_DIR": str(_EMPTY_CONFIG), "COLUMNS": "200"}
ENV.pop("EXECUTOR_DEBUG", None)


def _text(result: Any) -> str:
    return " ".join(getattr(part, "text", "") for part in result.content)


def _init(folder: Path, *options: str) -> Path:
    made = run_executor("init", "--session", str(folder), *options, "Add a login page")
    assert made.returncode == 0, made.stderr
    return folder


def _client(folder: Path, *extra: str) -> Client:
    return Client(StdioServerParameters(command=str(EXECUTOR), args=["mcp", "--session", str(folder), *extra], env=ENV))


def test_a_fresh_session_without_backends_is_served_and_says_what_to_fix(tmp_path: Path) -> None:
    folder = _init(tmp_path / "fresh")

    async def go() -> dict[str, Any]:
        async with _client(folder) as client:
            seen: dict[str, Any] = {"version": client.server_info.version if client.server_info else ""}
            seen["tools"] = {tool.name for tool in (await client.list_tools()).tools}
            seen["submit"] = await client.call_tool(
                "submit_task", {"name": "Fix the login bug", "description": "it crashes", "priority": "high"}
            )
            seen["fleet"] = await client.call_tool("get_fleet_status", {})
            seen["check"] = await client.call_tool("check_session", {})
            seen["cancel"] = await client.call_tool("cancel_task", {"task_id": "IMPL-001"})
            return seen

    seen = anyio.run(go)
    assert seen["version"]  # the distribution's version, not ""
    assert {"submit_task", "get_task_status", "get_fleet_status", "answer_escalation"} <= seen["tools"]
    submit = seen["submit"]
    assert submit.is_error
    assert "no backend for role(s) pm," in _text(submit)
    assert "pass --backend NAME" in _text(submit)  # the fix
    assert "`backend: NAME`" in _text(submit)
    fleet = seen["fleet"]
    assert not fleet.is_error, _text(fleet)
    assert fleet.structured_content["state"] == "unusable"
    assert any("no backend for role(s)" in line and "coder" in line for line in fleet.structured_content["problems"])
    assert not seen["check"].is_error, _text(seen["check"])
    assert seen["check"].structured_content["total"] == 4
    assert seen["cancel"].is_error
    assert "cannot run" in _text(seen["cancel"])


def test_a_session_that_cannot_run_still_takes_answers(tmp_path: Path) -> None:
    folder = _init(tmp_path / "asks")
    store = Store.open(folder)
    store.put_escalation(EscalationRow(id="ESC-001", issue="Ship it?", options=["yes", "no"]))
    store.close()

    async def go() -> tuple[Any, Any]:
        async with _client(folder) as client:
            wrong = await client.call_tool("answer_escalation", {"id": "ESC-001", "choice": "maybe"})
            answered = await client.call_tool("answer_escalation", {"id": "ESC-001", "choice": "yes"})
            return wrong, answered

    wrong, answered = anyio.run(go)
    assert wrong.is_error
    assert "'maybe' is not one of the options" in _text(wrong)
    assert not answered.is_error, _text(answered)
    assert answered.structured_content["status"] == "answered"
    assert answered.structured_content["choice"] == "yes"
    reader = Store.open(folder)
    try:
        row = reader.escalation("ESC-001")
    finally:
        reader.close()
    assert row is not None
    assert row.choice == "yes"


def test_submit_task_with_the_seed_arguments_picks_a_role_on_a_multi_role_session(tmp_path: Path) -> None:
    folder = _init(tmp_path / "team", "--backend", "demo")

    async def go() -> tuple[Any, dict[str, Any]]:
        async with _client(folder) as client:
            submitted = await client.call_tool(
                "submit_task",
                {
                    "name": "Write regression tests for the login form",
                    "description": "cover bad input",
                    "priority": "normal",
                },
            )
            assert not submitted.is_error, _text(submitted)
            status: dict[str, Any] = {}
            for _ in range(600):
                task_id = submitted.structured_content["id"]
                status = (await client.call_tool("get_task_status", {"task_id": task_id})).structured_content
                if status["task"]["status"] in ("completed", "failed"):
                    break
                await anyio.sleep(0.1)
            return submitted, status

    submitted, status = anyio.run(go)
    assert submitted.structured_content["owner"] == "qa"
    assert submitted.structured_content["assignment"].startswith("qa: ")
    assert "regression" in submitted.structured_content["assignment"]
    assert status["task"]["status"] == "completed"
