"""Attempts on nodes that share no filesystem with the head (``shared_filesystem = false``).

The cluster is a real ray.cluster_utils.Cluster on this machine (a head and a node labelled
``remote-box``); the executor treats the node as if it saw none of the head's folders: each
attempt gets the project as a git bundle, works in a clone in a temporary folder of the node,
and sends its branch back.  The same session run locally is the yardstick: what the project,
its branches and the store hold afterwards must be the same.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import msgspec
import pytest

from cluster.head_git import pack, receive
from cluster.node_git import NodeCheckout
from cluster.shipping import MAX_ARTIFACT_BYTES, Returned
from protocol.messages import AttemptResult, WorkOrder
from session.keypool import PoolKey
from tests.conftest import run_executor
from tests.fake_openai import FakeOpenAI, RateLimited, Reply
from tests.sessions import command_role_extra, write_session
from tests.test_routed_run import KEY_A, KEY_B, assert_no_key_anywhere, env_for, routed_session

ray = pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[test,ray]'; .ci/run installs it)")
from ray.cluster_utils import Cluster  # noqa: E402

STORE_MB = 100 * 1024 * 1024
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@e"]
# The agent writes where it ran into an artifact of its own.
RECORD_CWD = (
    "import os; open(os.path.join(os.environ['TEAM_EXECUTOR_ARTIFACTS'], "
    "os.environ['TEAM_EXECUTOR_TASK_ID'] + '-cwd.md'), 'w').write(os.getcwd())"
)


@pytest.fixture(scope="module")
def cluster():
    made = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": STORE_MB, "resources": {"head": 1}},
    )
    made.remote_node = made.add_node(num_cpus=1, object_store_memory=STORE_MB, resources={"remote-box": 8})
    made.wait_for_nodes()
    yield made
    made.shutdown()


def _git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def _project(root: Path, *, remote: bool) -> tuple[Path, Path]:
    """Two writers in worktrees of their own and a judge that merges one (as tests/test_worktrees.py)."""
    project = root / "project"
    project.mkdir(parents=True)
    _git(project, "init", "-q", "-b", "main")
    (project / "README.md").write_text("# project\n")
    (project / ".gitignore").write_text(".workflow/\n")
    _git(project, "add", ".")
    _git(project, "commit", "-qm", "init")
    extra = command_role_extra(sys.executable)
    folder = write_session(
        project / ".workflow" / ".team" / "TC-dual",
        {"coder": "IMPL", "alt": "ALT", "judge": "JUDGE"},
        {"IMPL-001": [], "ALT-001": [], "JUDGE-001": ["IMPL-001", "ALT-001"]},
        role_extra={"coder": extra + "isolation: worktree\n", "alt": extra + "isolation: worktree\n", "judge": extra},
    )
    cwd = [sys.executable, "-c", RECORD_CWD]
    (folder / "behaviors.json").write_text(
        json.dumps(
            {
                "IMPL-001": {
                    "write_file": {"path": "slug.py", "text": "def slug(s): return s.lower()\n"},
                    "run": cwd,
                    "report": {"status": "completed", "summary": "slug written", "files_modified": ["slug.py"]},
                },
                "ALT-001": {"write_file": {"path": "slug.py", "text": "import re\n# another way\n"}},
                "JUDGE-001": {"run": [*GIT, "merge", "--no-edit", "-q", "team-executor/IMPL-001"]},
            }
        )
    )
    if remote:
        need = '{ "remote-box" = 1 }'
        (folder / "executor.toml").write_text(
            "[cluster]\nnum_cpus = 0\nshared_filesystem = false\n\n[cluster.resources]\n"
            f"coder = {need}\nalt = {need}\njudge = {need}\n"
        )
    return project, folder


def _rows(folder: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(folder / ".executor" / "state.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _runs(folder: Path) -> list[tuple]:
    return _rows(folder, "SELECT task_id, attempt, outcome, error_kind, files_changed FROM runs ORDER BY task_id")


def _nodes(folder: Path) -> set[str]:
    return {node or "" for (node,) in _rows(folder, "SELECT node FROM runs")}


def _outcome(project: Path, folder: Path) -> dict[str, object]:
    """What a run leaves that must not depend on where its attempts ran."""
    return {
        "slug": (project / "slug.py").read_text(),
        "main": _git(project, "log", "--format=%s", "main").splitlines(),
        "branches": _git(project, "branch", "--list", "team-executor/*").split(),
        "worktrees": len(_git(project, "worktree", "list").splitlines()),
        "status": _git(project, "status", "--porcelain"),
        "artifacts": sorted(path.name for path in (folder / "artifacts").iterdir()),
        "patch": "another way" in (folder / "artifacts" / "ALT-001.patch").read_text(),
        "runs": _runs(folder),
    }


def test_remote_attempts_work_in_clones_and_their_branches_come_back_and_are_merged(cluster, tmp_path):
    local_project, local_folder = _project(tmp_path / "local", remote=False)
    local = run_executor("run", "--session", str(local_folder), "--max-workers", "2", timeout=240)
    assert local.returncode == 0, local.stdout + local.stderr

    project, folder = _project(tmp_path / "remote", remote=True)
    done = run_executor(
        "run", "--session", str(folder), "--max-workers", "2", "--cluster", cluster.address, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(cluster.remote_node.node_id[:12] in node for node in _nodes(folder)), _nodes(folder)

    # The coder ran in a private clone on the node, outside the project, removed afterwards.
    ran_in = Path((folder / "artifacts" / "IMPL-001-cwd.md").read_text())
    assert not ran_in.is_relative_to(project)
    assert not ran_in.is_relative_to(tmp_path)
    assert ran_in.is_relative_to(Path(tempfile.gettempdir()))
    assert ran_in.name == "work"
    assert ran_in.parent.name.startswith("team-executor-attempt-")
    assert not ran_in.exists(), "the node's clone is removed after the attempt"

    # Its branch came back, the judge merged it (on the node), and the merge reached main at the head.
    assert "IMPL-001: team-executor/IMPL-001 is merged" in done.stdout
    expected = _outcome(local_project, local_folder)
    found = _outcome(project, folder)
    expected["artifacts"].remove("IMPL-001-cwd.md")  # type: ignore[attr-defined]
    found["artifacts"].remove("IMPL-001-cwd.md")  # type: ignore[attr-defined]
    assert found == expected
    assert ("IMPL-001", 1, "completed", None, '["slug.py"]') in found["runs"]  # type: ignore[operator]
    assert found["slug"] == "def slug(s): return s.lower()\n"
    assert found["branches"] == ["team-executor/ALT-001"], "the unmerged branch is kept, as locally"
    assert _git(project, "log", "-1", "--format=%an", "main") == "team-executor\n", "the node's commit, as made"
    heads = dict(_rows(folder, "SELECT task_id, git_head_after FROM runs"))
    assert heads["IMPL-001"] == _git(project, "rev-parse", "main").strip(), "the commit that came back, recorded"
    assert heads["ALT-001"] == _git(project, "rev-parse", "team-executor/ALT-001").strip()
    assert heads["JUDGE-001"] == heads["IMPL-001"], "the judge's merge moved the project's branch at the head"
    assert (folder / "artifacts" / "IMPL-001-out.md").read_text().startswith("IMPL-001 attempt 1 pid ")
    report = json.loads((folder / ".executor" / "reports" / "IMPL-001-a1.json").read_text())
    assert report["files_modified"] == ["slug.py"], "the agent's report came back as written"
    assert "[worker] IMPL-001 done" in (folder / ".executor" / "logs" / "IMPL-001-a1.log").read_text()


def test_a_project_outside_git_cannot_be_shipped_and_says_so(cluster, tmp_path):
    folder = tmp_path / "S"
    write_session(folder, {"worker": "T"}, {"T-001": []}, role_extra={"worker": command_role_extra(sys.executable)})
    (folder / "behaviors.json").write_text("{}")
    (folder / "executor.toml").write_text("[cluster]\nnum_cpus = 0\nshared_filesystem = false\n")
    result = run_executor("run", "--session", str(folder), "--cluster", cluster.address, timeout=240)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "shared_filesystem = false sends the project to the nodes by git" in result.stderr + result.stdout
    assert "git init" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_a_key_reaches_the_node_only_as_the_answer_to_the_attempt_that_leased_it(cluster, tmp_path):
    with FakeOpenAI(keys=(KEY_A, KEY_B), models=("model-a",)) as fake:
        folder = routed_session(tmp_path, fake, [("model-a", "STANDARD")], "model-a")
        with (folder / "executor.toml").open("a") as config:
            config.write("\n[cluster]\nnum_cpus = 0\nshared_filesystem = false\n[cluster.resources]\n")
            config.write('writer = { "remote-box" = 1 }\n')
        _git(folder, "init", "-q", "-b", "main")
        _git(folder, "commit", "-q", "--allow-empty", "-m", "init")
        fake.script(RateLimited(retry_after_s=30), key=KEY_A)
        fake.script(Reply("[writer] WRITE-001 done: the text."), key=KEY_B)
        # The nodes were started without the keys: the pool's lease, relayed per call, is their only way.
        result = run_executor(
            "run", "--session", str(folder), "--max-attempts", "1", "--cluster", cluster.address,
            env=env_for(fake), timeout=240,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert len(fake.chat_requests(key=KEY_A)) == 1
        assert len(fake.chat_requests(key=KEY_B)) == 1
    assert "the text" in next((folder / "artifacts").glob("WRITE-001*")).read_text()
    ((key_id,),) = _rows(folder, "SELECT key_id FROM runs")
    assert key_id == PoolKey.new("openai-compatible", KEY_B).id
    # An HTTP agent starts no process (no runs.node): its placement is in the progress notes.
    placed = _rows(folder, "SELECT payload_json FROM events WHERE payload_json LIKE '%on node %'")
    assert [cluster.remote_node.node_id[:12] in payload for (payload,) in placed] == [True]
    assert_no_key_anywhere(folder, result.stdout, result.stderr)


# --- the shipping itself, without a cluster: what goes out, and what is refused coming back


def _shipped_project(tmp_path: Path) -> tuple[Path, WorkOrder]:
    project = tmp_path / "project"
    project.mkdir()
    _git(project, "init", "-q", "-b", "main")
    (project / "a.txt").write_text("one\n")
    (project / ".gitignore").write_text(".workflow/\n")
    _git(project, "add", ".")
    _git(project, "commit", "-qm", "init")
    (project / "config").mkdir()
    (project / "config" / "hydra_keys.json").write_text('{"openai": ["sk-test-never-leaves-the-head-0000"]}')
    session = project / ".workflow" / "S"
    (session / ".executor" / "prompts").mkdir(parents=True)
    (session / ".executor" / "prompts" / "T-001-a1.md").write_text("do it\n")
    (session / ".executor" / "state.db").write_text("state")
    (session / "artifacts").mkdir()
    (session / "hydra_keys.json").write_text('{"openai": ["sk-test-never-leaves-the-head-1111"]}')
    order = WorkOrder(
        task_id="T-001",
        attempt=1,
        role="worker",
        backend="command",
        session_dir=str(session),
        artifacts_dir=str(session / "artifacts"),
        workdir=str(project),
        prompt_file=str(session / ".executor" / "prompts" / "T-001-a1.md"),
        report_file=str(session / ".executor" / "reports" / "T-001-a1.json"),
        log_path=str(session / ".executor" / "logs" / "T-001-a1.log"),
        run_id="r",
        marker="m",
    )
    return project, order


def test_the_node_gets_the_work_tree_and_prompt_but_not_the_state_or_the_key_files(tmp_path):
    project, order = _shipped_project(tmp_path)
    (project / "b.txt").write_text("uncommitted work of an earlier task\n")
    outgoing = pack(order)
    shipped = _git(project, "ls-tree", "-r", "--name-only", outgoing.shipment.base).split()
    assert shipped == [".gitignore", "a.txt", "b.txt"]
    assert sorted(name for name, _ in outgoing.shipment.files) == [".executor/prompts/T-001-a1.md"]
    node = NodeCheckout(order, outgoing.shipment, outgoing.bundle)
    try:
        local = node.prepare()
        assert Path(local.prompt_file).read_text() == "do it\n"
        assert not Path(local.workdir).is_relative_to(project)
        assert _git(Path(local.workdir), "branch", "--show-current").strip() == "team-executor/T-001"
    finally:
        node.remove()
    assert not node.scratch.exists()


def test_what_comes_back_is_checked_before_it_is_written(tmp_path):
    project, order = _shipped_project(tmp_path)
    outgoing = pack(order)
    node = NodeCheckout(order, outgoing.shipment, outgoing.bundle)
    local = node.prepare()
    work = Path(local.workdir)
    (work / "a.txt").write_text("two\n")
    (work / "config").mkdir()
    (work / "config" / "hydra_keys.json").write_text('{"openai": ["sk-planted-by-the-agent-000000"]}')
    (Path(local.artifacts_dir) / "T-001-out.md").write_text("fine\n")
    names = ("artifacts/T-001-out.md", "../evil", "artifacts/../../evil", "/tmp/evil", "artifacts/T-001-big.md")
    result, returned = node.finish(local, AttemptResult(ok=True, artifacts=names))
    node.remove()
    hostile = (*returned.artifacts, ("../evil", b"x"), ("artifacts/../../evil", b"x"), ("/tmp/evil", b"x"))
    hostile += (("artifacts/T-001-big.md", b"x" * (MAX_ARTIFACT_BYTES + 1)),)
    taken = receive(outgoing, order, result, msgspec.structs.replace(returned, artifacts=hostile))
    assert taken.ok, taken.error
    assert taken.artifacts == ("artifacts/T-001-out.md",)
    session = Path(order.session_dir)
    assert sorted(path.name for path in (session / "artifacts").iterdir()) == ["T-001-out.md"]
    assert not (session / "evil").exists()
    assert not (session.parent / "evil").exists()
    assert (project / "a.txt").read_text() == "two\n", "the change is in the work tree, uncommitted, as locally"
    assert "never-leaves" in (project / "config" / "hydra_keys.json").read_text(), "no key file is written by git"
    assert _git(project, "status", "--porcelain", "a.txt") == " M a.txt\n"


def test_a_bundle_that_is_not_the_announced_commit_is_refused(tmp_path):
    project, order = _shipped_project(tmp_path)
    outgoing = pack(order)
    node = NodeCheckout(order, outgoing.shipment, outgoing.bundle)
    local = node.prepare()
    (Path(local.workdir) / "a.txt").write_text("two\n")
    result, returned = node.finish(local, AttemptResult(ok=True))
    node.remove()
    lied = msgspec.structs.replace(returned, tip="0" * 40)
    taken = receive(outgoing, order, result, lied)
    assert not taken.ok
    assert "not the announced" in (taken.error or "")
    assert (project / "a.txt").read_text() == "one\n"
    assert _git(project, "for-each-ref", "refs/team-executor/incoming") == ""


def test_work_that_no_longer_applies_is_kept_on_the_tasks_branch(tmp_path):
    project, order = _shipped_project(tmp_path)
    outgoing = pack(order)
    node = NodeCheckout(order, outgoing.shipment, outgoing.bundle)
    local = node.prepare()
    (Path(local.workdir) / "a.txt").write_text("the node's\n")
    result, returned = node.finish(local, AttemptResult(ok=True))
    node.remove()
    (project / "a.txt").write_text("the head's, meanwhile\n")
    taken = receive(outgoing, order, result, returned)
    assert not taken.ok
    assert "it is on branch team-executor/T-001" in (taken.error or "")
    assert (project / "a.txt").read_text() == "the head's, meanwhile\n"
    assert _git(project, "show", "team-executor/T-001:a.txt") == "the node's\n"


def test_commits_that_touch_the_session_folder_are_not_fast_forwarded_onto_the_project(tmp_path):
    project, order = _shipped_project(tmp_path)
    outgoing = pack(order)
    node = NodeCheckout(order, outgoing.shipment, outgoing.bundle)
    local = node.prepare()
    work = Path(local.workdir)
    (work / "a.txt").write_text("two\n")
    planted = work / ".workflow" / "S" / ".executor" / "inbox"
    planted.mkdir(parents=True)
    (planted / "request.json").write_text('{"cancel": "everything"}')
    _git(work, "add", "-f", ".")
    _git(work, "commit", "-qm", "an agent's commit")
    result, returned = node.finish(local, AttemptResult(ok=True))
    node.remove()
    taken = receive(outgoing, order, result, returned)
    assert taken.ok, taken.error
    assert _git(project, "log", "--format=%s", "main").splitlines() == ["init"]
    assert (project / "a.txt").read_text() == "two\n"
    assert not (Path(order.session_dir) / ".executor" / "inbox").exists()


def test_a_branch_that_does_not_descend_from_what_was_sent_is_refused(tmp_path):
    project, order = _shipped_project(tmp_path)
    outgoing = pack(order)
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    _git(stranger, "init", "-q", "-b", "team-executor/T-001")
    (stranger / "a.txt").write_text("another history\n")
    _git(stranger, "add", ".")
    _git(stranger, "commit", "-qm", "unrelated")
    bundle = tmp_path / "stranger.bundle"
    _git(stranger, "bundle", "create", "-q", str(bundle), "refs/heads/team-executor/T-001")
    tip = _git(stranger, "rev-parse", "HEAD").strip()
    taken = receive(outgoing, order, AttemptResult(ok=True), Returned(tip, tip, bundle.read_bytes()))
    assert not taken.ok
    assert "does not descend from what was sent" in (taken.error or "")
    assert (project / "a.txt").read_text() == "one\n"
    assert _git(project, "branch", "--list", "team-executor/*") == ""
