"""The --http server's dashboard API, over real HTTP against a running `executor run --http 0`:
authentication, reads, changes, server-sent events and Prometheus metrics."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.auth import Tokens
from tests.sessions import scripted_session
from tests.test_mcp_bridge import ENV, RunningBridge
from web.auth import WebGuard

GRAPH = {
    "T-001": [],
    "T-002": ["T-001"],  # a question holds it (the test opens it first)
    "T-003": ["T-001"],
    "T-004": [],  # fails every attempt
    "T-005": [],  # runs long: cancelled by the API
}
BEHAVIORS = {
    "T-001": {"sleep": 1.5},
    "T-004": {"exit": 3},
    "T-005": {"sleep": 120},
    "default": {"sleep": 0.1},
}


class Served:
    def __init__(self, bridge: RunningBridge) -> None:
        self.bridge = bridge
        self.base = bridge.url.removesuffix("/mcp")
        self.token = bridge.token
        self.http = httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {self.token}"}, timeout=20)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def wait_task(self, task_id: str, wanted: set[str], timeout_s: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            task = self.get(f"/api/tasks/{task_id}").json()["task"]
            if task["status"] in wanted or time.monotonic() > deadline:
                return task
            time.sleep(0.2)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = scripted_session(
        tmp_path_factory.mktemp("web") / "s",
        GRAPH,
        BEHAVIORS,
        python=sys.executable,
        team_extra={},
    )
    # One attempt each: T-004 fails at once instead of after backoffs.
    bridge = RunningBridge(folder, "--max-attempts", "1")
    held = bridge.call("escalate_decision", {"issue": "Ship T-002?", "options": ["go", "stop"], "task_id": "T-002"})
    assert not held.is_error, held.content
    server = Served(bridge)
    server.escalation_id = held.structured_content["id"]  # type: ignore[attr-defined]
    yield server
    server.http.close()
    bridge.stop()


# --- who may come in -------------------------------------------------------------------


def test_requests_without_the_owner_token_are_refused(served: Served) -> None:
    with httpx.Client(base_url=served.base, timeout=10) as anonymous:
        for path in ("/api/tasks", "/api/session", "/metrics", "/openapi.json", "/api/events", "/static/app.js"):
            response = anonymous.get(path)
            assert response.status_code == 401, (path, response.text)
            assert "Bearer" in response.headers["www-authenticate"]
        assert anonymous.post("/api/tasks", json={"name": "x"}).status_code == 401
        assert "Not signed in" in anonymous.get("/").text
        wrong = anonymous.get("/api/tasks", headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 401
        assert anonymous.get("/api/tasks", headers={"Authorization": "Basic abc"}).status_code == 401
        assert anonymous.get(f"/?token=nope-{served.token[:5]}").status_code == 401
        # DNS rebinding: a foreign Host is refused even with the token.
        foreign = served.get("/api/tasks", headers={"Host": "attacker.example:80"})
        assert foreign.status_code == 421
        # Liveness stays open for probes, and says nothing about the tasks.
        health = anonymous.get("/healthz")
        assert health.status_code == 200
        assert health.json()["ready"] is True
        assert "T-001" not in health.text


def test_the_link_with_the_token_signs_the_browser_in_with_a_cookie(served: Served) -> None:
    with httpx.Client(base_url=served.base, timeout=10) as browser:
        signed = browser.get(f"/?token={served.token}&tab=graph")
        assert signed.status_code == 303
        assert signed.headers["location"] == "/?tab=graph", "the token leaves the address bar"
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert served.token not in cookie, "the cookie proves the token without being it"
        page = browser.get("/")
        assert page.status_code == 200
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert browser.get("/api/session").status_code == 200
        # A change made with the cookie alone is refused (a cross-site form could send it) ...
        forged = browser.post(f"/api/tasks/{'T-404'}/cancel")
        assert forged.status_code == 403
        assert "x-requested-with" in forged.json()["detail"]
        # ... and goes through with the header a page on another site cannot add.
        allowed = browser.post("/api/tasks/T-404/cancel", headers={"X-Requested-With": "team-executor"})
        assert allowed.status_code == 404
        assert "T-404" in allowed.json()["detail"]


# --- reading ---------------------------------------------------------------------------


def test_tasks_session_detail_artifacts_and_agents_read_from_the_run(served: Served) -> None:
    served.wait_task("T-003", {"completed"})
    served.wait_task("T-004", {"failed"})
    tasks = served.get("/api/tasks").json()
    assert tasks["total"] == 5
    by_id = {task["id"]: task for task in tasks["tasks"]}
    assert by_id["T-002"]["status"] == "pending", "held by its open question"
    assert by_id["T-003"]["blocked_by"] == ["T-001"]
    only_failed = served.get("/api/tasks", params={"status": "failed"}).json()
    assert [task["id"] for task in only_failed["tasks"]] == ["T-004"]
    assert served.get("/api/tasks", params={"status": "weird"}).status_code == 422

    detail = served.get("/api/tasks/T-001").json()
    assert detail["runs"][0]["outcome"] == "completed"
    assert detail["runs"][0]["worker_id"]
    assert "T-001 starting" in detail["log_tail"], "the log's tail comes with the task"
    failed = served.get("/api/tasks/T-004").json()
    assert failed["task"]["last_error_kind"]
    assert failed["runs"][-1]["outcome"] == "failed"
    held = served.get("/api/tasks/T-002").json()
    assert [row["id"] for row in held["escalations"]] == [served.escalation_id]  # type: ignore[attr-defined]
    missing = served.get("/api/tasks/T-999")
    assert missing.status_code == 404
    assert "T-999" in missing.json()["detail"]

    (served.bridge.folder / "artifacts" / "note.md").write_text("# hello\n")
    assert served.get("/api/artifact", params={"path": "artifacts/note.md"}).text == "# hello\n"
    for bad, code in (("../etc/passwd", 400), (".executor/state.db", 404), ("/etc/passwd", 400), ("nope.md", 404)):
        assert served.get("/api/artifact", params={"path": bad}).status_code == code, bad
    # A link a worker planted in artifacts/: the resolved target (.executor/) decides, not the name.
    (served.bridge.folder / "artifacts" / "peek.md").symlink_to(served.bridge.folder / ".executor" / "state.db")
    assert served.get("/api/artifact", params={"path": "artifacts/peek.md"}).status_code == 404

    session = served.get("/api/session").json()
    assert session["session_id"] == "TC-s"
    assert session["total"] == 5
    assert session["run"]["state"] in ("running", "idle")
    assert session["open_escalations"] == 1
    assert session["last_event_id"] > 0
    assert any(item["backend"] == "command" and item["runs"] >= 4 for item in session["spend"])

    agents = served.get("/api/agents").json()
    worker = next(row for row in agents["agents"] if row["backend"] == "command")
    assert worker["completed"] >= 2
    assert worker["failed"] == 1
    assert 0 < worker["error_rate"] < 1
    assert worker["mean_completion_s"] > 0
    assert [w["task_id"] for w in agents["workers"]] == ["T-005"]
    assert agents["workers"][0]["elapsed_s"] > 0


def test_metrics_count_what_the_store_holds(served: Served) -> None:
    served.wait_task("T-003", {"completed"})
    text = served.get("/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    tasks = {sample.labels["status"]: sample.value for sample in families["executor_tasks"].samples}
    assert sum(tasks.values()) == 5
    assert tasks["failed"] >= 1
    assert families["executor_workers_running"].samples[0].value >= 1
    latency = {s.name: s.value for s in families["executor_dispatch_latency_seconds"].samples if not s.labels}
    assert latency["executor_dispatch_latency_seconds_count"] >= 4
    completed = families["executor_agent_tasks_completed"].samples
    assert sum(s.value for s in completed if s.labels["backend"] == "command") >= 2
    assert "executor_restarts_total" in text
    assert "executor_cost_usd_total" in text
    assert families["executor_escalations_open"].samples[0].value >= 0


# --- changing -------------------------------------------------------------------------


def test_submit_cancel_and_answer_change_the_running_pipeline(served: Served) -> None:
    submitted = served.http.post("/api/tasks", json={"name": "Write the changelog", "priority": "high"})
    assert submitted.status_code == 201, submitted.text
    new_id = submitted.json()["id"]
    assert served.wait_task(new_id, {"completed", "failed"})["status"] == "completed"

    invalid = served.http.post("/api/tasks", json={"name": ""})
    assert invalid.status_code == 422
    unknown = served.http.post("/api/tasks", json={"name": "x", "blocked_by": ["NOPE-1"]})
    assert unknown.status_code == 404
    assert "NOPE-1" in unknown.json()["detail"]
    extra = served.http.post("/api/tasks", json={"name": "x", "surprise": 1})
    assert extra.status_code == 422

    served.wait_task("T-005", {"in_progress"})
    cancelled = served.http.post("/api/tasks/T-005/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["was"] == "in_progress"
    assert served.wait_task("T-005", {"failed"})["last_error_kind"] == "cancelled"
    again = served.http.post("/api/tasks/T-005/cancel")
    assert again.status_code == 409

    escalation = served.escalation_id  # type: ignore[attr-defined]
    wrong = served.http.post(f"/api/escalations/{escalation}/answer", json={"choice": "maybe"})
    assert wrong.status_code == 409
    assert "not one of the options" in wrong.json()["detail"]
    assert served.http.post("/api/escalations/ESC-999/answer", json={"choice": "go"}).status_code == 404
    answered = served.http.post(f"/api/escalations/{escalation}/answer", json={"choice": "go"})
    assert answered.status_code == 200, answered.text
    assert answered.json()["answered_by"] == "web"
    assert served.wait_task("T-002", {"completed"})["status"] == "completed"


# --- the event stream ------------------------------------------------------------------


def _read_events(served: Served, after: int, until: str, headers: dict[str, str] | None = None) -> list[dict]:
    events: list[dict] = []
    with served.http.stream("GET", "/api/events", params={"after": after}, headers=headers or {}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        data = ""
        for line in stream.iter_lines():
            if line.startswith("data: "):
                data = line[6:]
            elif line == "" and data:
                events.append(json.loads(data))
                data = ""
                if events[-1]["type"] == until:
                    break
    return events


def test_events_stream_everything_in_order_and_resume_from_the_last_id(served: Served) -> None:
    first = _read_events(served, 0, "task_completed")
    ids = [event["id"] for event in first]
    assert ids == sorted(ids)
    assert ids[0] == 1
    assert first[0]["type"] == "run_started"
    completed = first[-1]
    # Reconnecting with Last-Event-ID (as EventSource does) carries on right after it.
    rest = _read_events(served, 0, "task_completed", headers={"Last-Event-ID": str(completed["id"])})
    assert rest[0]["id"] == completed["id"] + 1
    assert {event["id"] for event in rest}.isdisjoint(ids)


def test_the_schema_describes_every_route_and_health_reports_the_tree(served: Served) -> None:
    schema = served.get("/openapi.json").json()
    paths = set(schema["paths"])
    assert {
        "/healthz",
        "/metrics",
        "/api/session",
        "/api/tasks",
        "/api/tasks/{task_id}",
        "/api/tasks/{task_id}/cancel",
        "/api/agents",
        "/api/escalations",
        "/api/escalations/{escalation_id}/answer",
        "/api/events",
    } <= paths
    health = served.get("/healthz").json()
    assert health["live"] is True
    assert "session" in health["actors"]


def test_schemathesis_finds_no_server_error(served: Served, tmp_path: Path) -> None:
    """Generated requests against /openapi.json: none may get a 5xx (503 'busy' is allowed)."""
    report = tmp_path / "junit.xml"
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{served.base}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "15",
            "--header",
            f"Authorization: Bearer {served.token}",
            "--exclude-path",
            "/api/events",  # an endless stream: covered by the SSE test above
            "--report",
            "junit",
            "--report-junit-path",
            str(report),
            "--no-color",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=tmp_path,  # schemathesis keeps its cache in the working directory
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    tested = re.search(r"Tested: (\d+)", result.stdout)
    assert tested, result.stdout[-3000:]
    assert int(tested.group(1)) >= 10, "every operation but the stream was exercised"
    assert report.read_text().count("<testcase") >= 10


def test_the_worker_token_opens_no_dashboard_route() -> None:
    """Workers hold a token for their MCP tools; the guard in front of the dashboard refuses it."""
    tokens = Tokens("owner-token-0123456789")

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def go() -> tuple[int, int, int]:
        transport = httpx.ASGITransport(app=WebGuard(inner, tokens, loopback_only=True))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
            worker = await client.get("/api/tasks", headers={"Authorization": f"Bearer {tokens.worker}"})
            owner = await client.get("/api/tasks", headers={"Authorization": f"Bearer {tokens.owner}"})
            link = await client.get(f"/?token={tokens.worker}")
            return worker.status_code, owner.status_code, link.status_code

    assert anyio.run(go) == (401, 200, 401)
