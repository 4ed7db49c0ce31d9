"""The .msg/messages.jsonl message bus in the upstream team_msg format."""

from __future__ import annotations

import json
import re
import threading

import pytest

from session.message_bus import (
    Message,
    MessageBus,
    ProgressPacer,
    blocker_message,
    error_message,
    format_message_id,
    message_number,
    progress_message,
    read_messages,
    task_complete_message,
    task_unblocked_message,
    warning_message,
)
from session.redaction import register_secret

TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00")


def messages_file(folder):
    return folder / ".msg" / "messages.jsonl"


def lines(folder):
    return messages_file(folder).read_text(encoding="utf-8").split("\n")


def records(folder):
    return [json.loads(line) for line in lines(folder) if line]


def seed(folder, text):
    (folder / ".msg").mkdir(exist_ok=True)
    messages_file(folder).write_text(text, encoding="utf-8")


def test_no_secret_reaches_the_file_from_any_field_whatever_its_key(tmp_path):
    secret, shaped = "busSECRETvalue-0123456789", "ghp_" + "Z1x2C3v4" * 4
    register_secret(secret)
    with MessageBus.open(tmp_path) as bus:
        bus.post(
            f"role {secret}",
            f"[worker] T-1 complete: {shaped}",
            type=f"progress {secret}",
            to=shaped,
            data={
                "task_id": secret,
                "detail": [shaped, ("status", secret)],
                secret: "a key an agent chose",
                "nested": {"phase": f"dispatched {shaped}", "status": "completed"},
            },
        )
    text = messages_file(tmp_path).read_text(encoding="utf-8")
    assert secret not in text
    assert shaped not in text
    (record,) = records(tmp_path)
    assert record["from"] == "role …6789"
    assert record["data"]["task_id"] == "…6789"
    assert record["data"]["detail"] == ["…C3v4", ["status", "…6789"]]
    assert record["data"]["nested"] == {"phase": "dispatched …C3v4", "status": "completed"}
    assert record["data"]["…6789"] == "a key an agent chose"


def test_drafts_keep_the_time_they_were_drafted_and_are_numbered_when_posted_in_one_write(tmp_path):
    times = iter(f"2026-03-01T00:00:0{second}.000+00:00" for second in range(1, 10))
    with MessageBus.open(tmp_path, clock=lambda: next(times)) as bus:
        first = bus.draft("worker", "first", type="progress", data={"task_id": "T-1"})
        second = bus.draft("worker", "second")
        with pytest.raises(TypeError):
            bus.draft("worker", "not JSON", data={"x": object()})
        assert bus.post("executor", "in between") == "MSG-001"
        assert bus.post_drafts([first, second]) == ["MSG-002", "MSG-003"]
        assert bus.post_drafts([]) == []
    assert [(r["id"], r["ts"][17:19], r["summary"]) for r in records(tmp_path)] == [
        ("MSG-001", "04", "in between"),
        ("MSG-002", "01", "first"),
        ("MSG-003", "02", "second"),
    ]
    assert lines(tmp_path)[1] == (
        '{"id":"MSG-002","ts":"2026-03-01T00:00:01.000+00:00","from":"worker","to":"coordinator",'
        '"type":"progress","summary":"first","data":{"task_id":"T-1"}}'
    )


def test_the_first_message_of_a_new_session_is_msg_001_in_the_upstream_shape(tmp_path):
    with MessageBus.open(tmp_path) as bus:
        assert bus.last_id is None
        message_id = bus.post("executor", "run started")
    assert message_id == "MSG-001"
    (record,) = records(tmp_path)
    assert list(record) == ["id", "ts", "from", "to", "type", "summary"]
    assert record["id"] == "MSG-001"
    assert TS.fullmatch(record["ts"])
    assert record["from"] == "executor"
    assert record["to"] == "coordinator"
    assert record["type"] == "message"
    assert record["summary"] == "run started"


def test_a_line_is_compact_json_with_data_last_and_a_newline(tmp_path):
    with MessageBus.open(tmp_path, clock=lambda: "2026-03-01T00:00:00.000+00:00") as bus:
        bus.post("coder", "done ✓", type="task_complete", to="executor", data={"artifact": "artifacts/a.md"})
    assert messages_file(tmp_path).read_text(encoding="utf-8") == (
        '{"id":"MSG-001","ts":"2026-03-01T00:00:00.000+00:00","from":"coder","to":"executor",'
        '"type":"task_complete","summary":"done ✓","data":{"artifact":"artifacts/a.md"}}\n'
    )


def test_ids_continue_after_the_highest_existing_one_ignoring_malformed_lines(tmp_path):
    seed(
        tmp_path,
        '{"id":"MSG-004","from":"a","summary":"x"}\n'
        "not json at all\n"
        '{"id":"MSG-012","from":"a","summary":"y"}\n'
        '{"id":"MSG-007"}\n'
        '{"id":"OTHER-99"}\n'
        "[1, 2]\n"
        "\n"
        '{"id":"MSG-0',  # a truncated last line
    )
    with MessageBus.open(tmp_path) as bus:
        assert bus.last_id == "MSG-012"
        assert bus.post("executor", "next") == "MSG-013"
    *_, truncated, ours, end = lines(tmp_path)
    assert truncated == '{"id":"MSG-0'
    assert json.loads(ours)["id"] == "MSG-013"
    assert end == ""


def test_a_last_line_without_a_newline_is_finished_before_appending(tmp_path):
    seed(tmp_path, '{"id":"MSG-002","from":"a","to":"coordinator","type":"message","summary":"x"}')
    with MessageBus.open(tmp_path) as bus:
        bus.post("executor", "after")
    assert [record["id"] for record in records(tmp_path)] == ["MSG-002", "MSG-003"]


def test_ids_are_padded_to_three_digits_and_grow_past_999(tmp_path):
    seed(tmp_path, '{"id":"MSG-998"}\n')
    with MessageBus.open(tmp_path) as bus:
        assert [bus.post("executor", "m") for _ in range(3)] == ["MSG-999", "MSG-1000", "MSG-1001"]
    with MessageBus.open(tmp_path) as bus:
        assert bus.post("executor", "m") == "MSG-1002"
    assert format_message_id(7) == "MSG-007"
    assert message_number("MSG-1000") == 1000
    assert message_number("MSG-x") is None
    assert message_number(12) is None


def test_reopening_the_bus_continues_the_numbering(tmp_path):
    with MessageBus.open(tmp_path) as bus:
        bus.post("executor", "one")
    with MessageBus.open(tmp_path) as bus:
        assert bus.post("executor", "two") == "MSG-002"


def test_lines_another_process_appends_while_open_are_not_reused(tmp_path):
    with MessageBus.open(tmp_path) as bus:
        bus.post("executor", "ours")
        with messages_file(tmp_path).open("a", encoding="utf-8") as other:
            other.write('{"id":"MSG-040","from":"coder","summary":"theirs"}')  # and no newline
        assert bus.post("executor", "ours again") == "MSG-041"
    assert [record["id"] for record in records(tmp_path)] == ["MSG-001", "MSG-040", "MSG-041"]


def test_line_separators_in_text_do_not_split_a_message_line(tmp_path):
    summary = "a\nb\u2028c\u2029d\x85e"
    with MessageBus.open(tmp_path) as bus:
        bus.post("executor", summary)
    text = messages_file(tmp_path).read_text(encoding="utf-8")
    assert len(text.splitlines()) == 1
    assert json.loads(text)["summary"] == summary


def test_a_lone_surrogate_is_written_escaped_not_refused(tmp_path):
    with MessageBus.open(tmp_path) as bus:
        bus.post("executor", "bad \udcff byte")
    assert records(tmp_path)[0]["summary"] == "bad \udcff byte"


def test_unserialisable_data_is_refused_without_using_up_an_id(tmp_path):
    with MessageBus.open(tmp_path) as bus:
        with pytest.raises(TypeError):
            bus.post("executor", "x", data={"when": object()})
        with pytest.raises(ValueError):
            bus.post("executor", "x", data={"ratio": float("nan")})
        assert bus.post("executor", "ok") == "MSG-001"
    assert len(records(tmp_path)) == 1


def test_posting_after_close_is_an_error_and_close_is_idempotent(tmp_path):
    bus = MessageBus.open(tmp_path)
    bus.close()
    bus.close()
    with pytest.raises(ValueError, match="closed"):
        bus.post("executor", "late")


def test_a_state_update_merges_its_data_into_meta_role_state(tmp_path):
    (tmp_path / ".msg").mkdir()
    (tmp_path / ".msg" / "meta.json").write_text(
        json.dumps({"status": "active", "role_state": {"coder": {"a": 1, "b": 2}, "qa": {"z": 0}}})
    )
    with MessageBus.open(tmp_path, clock=lambda: "2026-03-01T00:00:00.000+00:00") as bus:
        bus.post("coder", "state", type="state_update", data={"b": 3, "c": [4]})
    meta = json.loads((tmp_path / ".msg" / "meta.json").read_text())
    assert meta == {
        "status": "active",
        "role_state": {
            "coder": {"a": 1, "b": 3, "c": [4], "_updated_at": "2026-03-01T00:00:00.000+00:00"},
            "qa": {"z": 0},
        },
    }
    assert records(tmp_path)[0]["type"] == "state_update"


def test_a_state_update_creates_meta_json_when_missing(tmp_path):
    with MessageBus.open(tmp_path) as bus:
        bus.post("analyst", "state", type="state_update", data={"phase": 2})
        bus.post("executor", "plain message", data={"phase": 9})
    meta = json.loads((tmp_path / ".msg" / "meta.json").read_text())
    assert list(meta) == ["role_state"]
    assert list(meta["role_state"]) == ["analyst"]
    assert meta["role_state"]["analyst"]["phase"] == 2
    assert [p.name for p in (tmp_path / ".msg").iterdir() if p.name.endswith(".tmp")] == []


def test_an_unreadable_meta_json_is_set_aside_then_replaced(tmp_path):
    (tmp_path / ".msg").mkdir()
    (tmp_path / ".msg" / "meta.json").write_text("{broken")
    with MessageBus.open(tmp_path) as bus:
        bus.post("coder", "state", type="state_update", data={"ok": True})
    assert (tmp_path / ".msg" / "meta.json.bad").read_text() == "{broken"
    assert json.loads((tmp_path / ".msg" / "meta.json").read_text())["role_state"]["coder"]["ok"] is True


def test_a_reader_during_1000_posts_sees_only_whole_lines(tmp_path):
    bus = MessageBus.open(tmp_path)
    done = threading.Event()
    payload = {"text": "x" * 300, "files_modified": [f"src/file_{n}.py" for n in range(20)]}

    def writer():
        try:
            for n in range(1000):
                bus.post("coder", f"message {n}", type="progress", data=payload)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    try:
        while not done.is_set() or reads == 0:
            text = messages_file(tmp_path).read_bytes()
            complete, _, tail = text.rpartition(b"\n")
            for line in complete.split(b"\n") if complete else []:
                assert json.loads(line)["data"] == payload
            if tail:  # being written right now: a prefix of a line, never a line of its own
                assert b"\n" not in tail
            assert all(record["data"] == payload for record in read_messages(tmp_path))
            reads += 1
    finally:
        thread.join()
        bus.close()
    ids = [record["id"] for record in records(tmp_path)]
    assert ids == [format_message_id(n) for n in range(1, 1001)]


def test_posts_from_several_threads_get_unique_ids(tmp_path):
    with MessageBus.open(tmp_path) as bus:
        threads = [threading.Thread(target=lambda: [bus.post("executor", "m") for _ in range(100)]) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    ids = [record["id"] for record in records(tmp_path)]
    assert sorted(ids) == [format_message_id(n) for n in range(1, 401)]


def test_read_messages_skips_malformed_lines_and_a_missing_file_is_empty(tmp_path):
    assert read_messages(tmp_path) == []
    seed(tmp_path, '{"id":"MSG-001"}\ngarbage\n"a string"\n{"id":"MSG-002"}\n{"id":"MSG-0')
    assert [record["id"] for record in read_messages(tmp_path)] == ["MSG-001", "MSG-002"]


# --- message bodies -------------------------------------------------------------------


def test_a_progress_message_carries_the_upstream_fields():
    message = progress_message("CODE-001", "coder", "in_progress", 40, "Phase 3")
    assert message.type == "progress"
    assert message.data == {
        "task_id": "CODE-001",
        "role": "coder",
        "status": "in_progress",
        "progress_pct": 40,
        "phase": "Phase 3",
    }
    assert message.summary.startswith("[coder] CODE-001")


def test_a_blocker_message_carries_detail_severity_and_attempts():
    kind, summary, data = blocker_message("CODE-002", "tests need a database\nand a key", "HIGH", ("mocked it",))
    assert kind == "blocker"
    assert "\n" not in summary
    assert data == {
        "task_id": "CODE-002",
        "blocker_detail": "tests need a database\nand a key",
        "severity": "HIGH",
        "attempted": ["mocked it"],
    }


def test_a_task_complete_message_names_the_artifact_and_files():
    message = task_complete_message("CODE-001", "coder", "artifacts/CODE-001.md", ["src/a.py"])
    assert message.type == "task_complete"
    assert message.data == {
        "task_id": "CODE-001",
        "role": "coder",
        "artifact": "artifacts/CODE-001.md",
        "files_modified": ["src/a.py"],
    }
    assert "artifacts/CODE-001.md" in message.summary


def test_a_task_unblocked_message_lists_the_tasks_like_the_worker_status_line():
    message = task_unblocked_message(["QA-001", "DOC-001"], unblocked_by="CODE-001")
    assert message == Message(
        "task_unblocked",
        "Tasks unblocked: QA-001, DOC-001",
        {"tasks": ["QA-001", "DOC-001"], "unblocked_by": "CODE-001"},
    )


def test_warning_and_error_messages_leave_out_absent_details():
    assert warning_message("capability gap: no designer role") == Message(
        "warning", "capability gap: no designer role", None
    )
    error = error_message("worker crashed", task_id="CODE-001", error_kind="crash")
    assert error == Message("error", "worker crashed", {"task_id": "CODE-001", "error_kind": "crash"})


def test_long_summaries_are_cut_to_one_short_line():
    message = warning_message("word " * 200)
    assert len(message.summary) <= 200
    assert message.summary.endswith("…")


def test_a_helper_message_posts_with_its_type_and_data(tmp_path):
    with MessageBus.open(tmp_path) as bus:
        bus.post_message("executor", task_unblocked_message(["QA-001"]), to="qa")
    (record,) = records(tmp_path)
    assert (record["type"], record["to"], record["data"]) == ("task_unblocked", "qa", {"tasks": ["QA-001"]})


def test_a_tasks_progress_goes_to_the_bus_first_then_once_per_interval():
    pacer = ProgressPacer(interval_s=5.0)
    reports = [0.0, 0.25, 0.5, 4.9, 5.0, 5.1, 9.9, 10.2]
    assert [pacer.due("T-1", at) for at in reports] == [True, False, False, False, True, False, False, True]
    assert pacer.due("T-2", 5.1)  # each task on its own pace
    pacer.forget("T-1")  # its attempt ended: the next attempt's first report goes out at once
    assert pacer.due("T-1", 10.3)
    assert not pacer.due("T-1", 10.4)
