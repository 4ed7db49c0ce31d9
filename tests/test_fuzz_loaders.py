"""No input, however malformed, makes the loaders raise: every failure is a Problem."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from session.loader import MAX_JSON_BYTES, inspect_session
from session.rolespec import parse_role_spec
from tests.sessions import DEMO

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def fresh_demo() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="fuzz-")) / "s"
    shutil.copytree(DEMO, folder)
    return folder


def assert_reported_not_raised(folder: Path) -> None:
    try:
        session, problems = inspect_session(folder)
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)
    if session is None:
        errors = [p for p in problems if p.severity == "error"]
        assert errors, "a rejected session must say why"
        for problem in errors:
            assert problem.file
            assert problem.message
            assert problem.fix


@FUZZ
@given(data=st.binary(max_size=2000), name=st.sampled_from(["team-session.json", "task-analysis.json"]))
def test_random_bytes_in_a_session_file_are_reported(data, name):
    folder = fresh_demo()
    (folder / name).write_bytes(data)
    assert_reported_not_raised(folder)


@FUZZ
@given(cut=st.integers(min_value=0, max_value=4000), name=st.sampled_from(["team-session.json", "task-analysis.json"]))
def test_truncated_json_is_reported(cut, name):
    folder = fresh_demo()
    text = (folder / name).read_bytes()
    (folder / name).write_bytes(text[: cut % max(len(text), 1)])
    assert_reported_not_raised(folder)


@FUZZ
@given(
    name=st.sampled_from(["team-session.json", "task-analysis.json"]),
    path=st.lists(
        st.sampled_from(
            [
                "roles",
                "0",
                "name",
                "dependency_graph",
                "capabilities",
                "tasks",
                "status",
                "completed_tasks",
                "role_spec",
                "depends_on",
                "id",
                "PLAN-001",
            ]
        ),
        min_size=1,
        max_size=4,
    ),
    value=json_values,
)
def test_values_of_the_wrong_type_anywhere_are_reported(name, path, value):
    folder = fresh_demo()
    data = json.loads((folder / name).read_text())
    node = data
    for key in path[:-1]:
        if isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            break
    if isinstance(node, dict):
        node[path[-1]] = value
    elif isinstance(node, list) and node:
        node[0] = value
    (folder / name).write_text(json.dumps(data))
    assert_reported_not_raised(folder)


@FUZZ
@given(text=st.text(max_size=1500))
def test_random_role_spec_text_is_reported(text):
    folder = fresh_demo()
    (folder / "role-specs" / "coder.md").write_text(text, encoding="utf-8", errors="surrogatepass")
    assert_reported_not_raised(folder)


@FUZZ
@given(header=st.text(max_size=400), body=st.text(max_size=300))
def test_random_frontmatter_is_reported(header, body, tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "r.md"
    path.write_text(f"---\n{header}\n---\n{body}", encoding="utf-8", errors="surrogatepass")
    spec, problems = parse_role_spec(path, "r.md")
    assert (spec is None) == bool(problems)


def test_deeply_nested_json_is_reported(tmp_path):
    folder = fresh_demo()
    (folder / "task-analysis.json").write_text("[" * 100_000 + "]" * 100_000)
    assert_reported_not_raised(folder)


def test_deeply_nested_yaml_is_reported(tmp_path):
    folder = fresh_demo()
    (folder / "role-specs" / "coder.md").write_text("---\nrole: " + "[" * 50_000 + "\n---\n")
    assert_reported_not_raised(folder)


def test_a_file_over_the_size_limit_is_refused_without_reading_it(tmp_path):
    folder = fresh_demo()
    with (folder / "task-analysis.json").open("wb") as handle:
        handle.truncate(MAX_JSON_BYTES + 1)  # sparse: costs no disk
    session, problems = inspect_session(folder)
    shutil.rmtree(folder.parent)
    assert session is None
    assert "over the 64 MiB limit" in problems[0].message


def test_a_large_junk_file_under_the_limit_is_reported(tmp_path):
    folder = fresh_demo()
    (folder / "team-session.json").write_bytes(b"{" + b"\x00\xff" * (5 << 20))
    assert_reported_not_raised(folder)


def test_a_huge_role_spec_is_refused(tmp_path):
    folder = fresh_demo()
    (folder / "role-specs" / "pm.md").write_text("---\n" + "x: y\n" * 400_000 + "---\n")
    assert_reported_not_raised(folder)
