"""The head's side of a git-shipped attempt: what goes to the node, and taking its branch back.

:func:`pack` runs on the worker's thread before the attempt is placed.  The base the
node starts from is the task's branch ``team-executor/<ID>``: for a task in a worktree
of its own (``isolation: worktree``), that worktree's branch; for any other task, the
project's work tree as it is now (uncommitted work of earlier tasks included, the
session folder and the key seed files left out) as a commit on top of HEAD — HEAD itself when the tree is
clean.  The bundle carries that base and the other tasks' ``team-executor/*`` branches.

:func:`receive` runs when the node's result is back, and leaves the project exactly as a
local attempt would have:

- a worktree task: its head-side worktree fast-forwards to the node's commits, which
  are then on branch ``team-executor/<ID>`` as after a local attempt (the usual
  settling merges or exports it at the end);
- any other task: commits the agent made itself are fast-forwarded onto the project's
  branch (as a local agent's ``git commit`` or ``git merge`` would have), and what it
  left uncommitted is applied to the work tree, uncommitted.  Commits that touch the
  session folder or a key seed file are not taken as they are: their change, without
  those paths, is applied uncommitted instead.  If that cannot be done
  (the project moved meanwhile, or the change does not apply), the work is kept on
  branch ``team-executor/<ID>`` and the attempt fails saying so.

Nothing the node sends is trusted: the branch name is the head's, the fetched commit
must be the one announced and descend from the base, artifacts must be plain names
under ``artifacts/`` within the size limits, and paths of the session folder are
never written through git.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import msgspec

from cluster.shipping import (
    AUTHOR_ENV,
    MAX_ARTIFACT_BYTES,
    MAX_ARTIFACTS,
    MAX_BUNDLE_BYTES,
    MAX_CONTEXT_BYTES,
    MAX_CONTEXT_FILE_BYTES,
    MAX_REPORT_BYTES,
    Returned,
    ShipError,
    Shipment,
    git,
    plain_relative,
    ship_ref,
)
from protocol.messages import AttemptResult, WorkOrder
from session.config_sources import SEED_FILES
from session.git_trees import GitTreeError, capture_tree, head_commit, is_object, repo_root
from session.own_paths import own_prefixes
from session.safepath import UnsafePath, within
from session.store import STATE_DIR
from session.worktrees import WorktreeError, branch_of, commit_all

__all__ = ["Outgoing", "pack", "receive"]

# One repository, many worker threads: refs, the index and the work tree change one attempt at a time.
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Outgoing:
    shipment: Shipment
    bundle: bytes
    root: Path  # the head's repository (a worktree task's: its worktree)
    head_before: str | None  # its HEAD when the attempt was packed


def _kept_back(root: Path, session_dir: Path) -> tuple[str, ...]:
    """Repository paths that never go to a node or come back from one: the session folder, and the
    seed files that can hold keys and tokens (``config/hydra_keys.json``...; a committed one is in
    the history, which does go: keep them out of git)."""
    return (*own_prefixes(root, session_dir), *(f"config/{name}" for name in SEED_FILES))


def _base(order: WorkOrder, root: Path) -> str:
    if order.worktree:  # its own branch, every earlier attempt's work committed on it
        try:
            commit_all(root, f"{order.task_id}: work left uncommitted (team-executor)")
        except WorktreeError as error:
            raise ShipError(str(error)) from None
        base = head_commit(root)
        if base is None:
            raise ShipError(f"the worktree {root} has no commit")
        return base
    try:
        tree = capture_tree(root, _kept_back(root, Path(order.session_dir)))
    except GitTreeError as error:
        raise ShipError(str(error)) from None
    head = head_commit(root)
    if head is not None and git(root, "rev-parse", f"{head}^{{tree}}").decode().strip() == tree:
        return head
    parents = ["-p", head] if head is not None else []
    message = f"{order.task_id}: the work tree before attempt {order.attempt} (team-executor)".encode()
    return git(root, "commit-tree", tree, *parents, stdin=message, env=AUTHOR_ENV).decode().strip()


def _context(order: WorkOrder) -> tuple[tuple[str, bytes], ...]:
    """The session's files an agent may read (role-specs, wisdom, upstream artifacts...) and its prompt.

    The executor's state (``.executor/``) stays, except this attempt's prompt, and so does any
    seed file (``hydra_keys.json``...) that can hold keys."""
    session = Path(order.session_dir)
    files: list[tuple[str, bytes]] = []
    total = 0
    prompt = Path(order.prompt_file)
    if prompt.is_file():
        data = prompt.read_bytes()
        files.append((prompt.relative_to(session).as_posix(), data))
        total += len(data)
    for path in sorted(session.rglob("*")):
        relative = path.relative_to(session)
        if relative.parts[0] == STATE_DIR or path.name in SEED_FILES or path.is_symlink() or not path.is_file():
            continue
        size = path.stat().st_size
        if size > MAX_CONTEXT_FILE_BYTES or total + size > MAX_CONTEXT_BYTES:
            continue
        files.append((relative.as_posix(), path.read_bytes()))
        total += size
    return tuple(files)


def pack(order: WorkOrder) -> Outgoing:
    """The bundle and the shipment for ``order``'s attempt; raises :class:`ShipError`."""
    workdir = Path(order.workdir)
    root = repo_root(workdir)
    if root is None:
        raise ShipError(
            f"{workdir} is not in a git repository: with [cluster].shared_filesystem = false the project goes to "
            "the nodes by git (run `git init` and commit it, or share the folder and set shared_filesystem = true)"
        )
    ref = ship_ref(order.task_id)
    with _LOCK, tempfile.TemporaryDirectory(prefix="executor-ship-") as scratch:
        head_before = head_commit(root)
        base = _base(order, root)
        git(root, "update-ref", ref, base)
        try:
            bundle = Path(scratch) / "out.bundle"
            git(root, "bundle", "create", "-q", str(bundle), ref, "--branches=team-executor/*")
            data = bundle.read_bytes()
        finally:
            git(root, "update-ref", "-d", ref)
    relative = workdir.resolve().relative_to(root.resolve()).as_posix()
    shipment = Shipment(
        branch=branch_of(order.task_id),
        base=base,
        workdir="" if relative == "." else relative,
        files=_context(order),
    )
    return Outgoing(shipment=shipment, bundle=data, root=root, head_before=head_before)


def _write_back(order: WorkOrder, returned: Returned) -> set[str]:
    """The artifacts, the report and the log into the head's session folder (plain names, sizes bounded);
    the names of the artifacts written."""
    session = Path(order.session_dir)
    written: set[str] = set()
    for name, data in returned.artifacts[:MAX_ARTIFACTS]:
        relative = plain_relative(name, under="artifacts")
        if relative is None or len(data) > MAX_ARTIFACT_BYTES:
            continue
        try:
            target = within(session, *relative.parts)
        except UnsafePath:
            continue
        if target.is_symlink():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written.add(name)
    if returned.report and len(returned.report) <= MAX_REPORT_BYTES:
        report = Path(order.report_file)
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_bytes(returned.report)
    if returned.log:
        log = Path(order.log_path)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as handle:
            handle.write(returned.log)
    return written


def _failed(result: AttemptResult, why: str) -> AttemptResult:
    return msgspec.structs.replace(result, ok=False, error_kind="crash", error=why)


def receive(outgoing: Outgoing, order: WorkOrder, result: AttemptResult, returned: Returned) -> AttemptResult:
    """Take the node's work into the project (see the module's docstring); the attempt's result.

    Its ``git_head_before`` and ``git_head_after`` are the head's (the node's clone is gone)."""
    written = _write_back(order, returned)
    # The result names only what is here now: nothing the node claims beyond what it sent.
    result = msgspec.structs.replace(
        result,
        artifacts=tuple(name for name in result.artifacts if name in written),
        git_head_before=outgoing.head_before,
        git_head_after=None,
    )
    result = _received(outgoing, order, result, returned)
    return msgspec.structs.replace(result, git_head_after=head_commit(outgoing.root))


def _received(outgoing: Outgoing, order: WorkOrder, result: AttemptResult, returned: Returned) -> AttemptResult:
    if returned.problem is not None:
        return _failed(result, f"its work could not be sent back from the node: {returned.problem}")
    tip, base = returned.tip, outgoing.shipment.base
    if tip is None:
        return result  # nothing changed in the project
    if not is_object(tip) or len(returned.bundle) > MAX_BUNDLE_BYTES:
        return _failed(result, "the node sent back a malformed branch; its work is lost")
    try:
        with _LOCK:
            return _take(outgoing, order, result, returned, tip, base)
    except ShipError as error:
        return _failed(result, f"its work could not be taken back from the node: {error}")


def _take(
    outgoing: Outgoing, order: WorkOrder, result: AttemptResult, returned: Returned, tip: str, base: str
) -> AttemptResult:
    root = outgoing.root
    branch = outgoing.shipment.branch
    incoming = f"refs/team-executor/incoming/{order.task_id}"
    with tempfile.TemporaryDirectory(prefix="executor-ship-") as scratch:
        bundle = Path(scratch) / "in.bundle"
        bundle.write_bytes(returned.bundle)
        git(root, "fetch", "-q", "--no-tags", "--no-write-fetch-head", str(bundle), f"+refs/heads/{branch}:{incoming}")
    try:
        fetched = git(root, "rev-parse", "--verify", "-q", f"{incoming}^{{commit}}").decode().strip()
    finally:
        git(root, "update-ref", "-d", incoming)
    if fetched != tip:
        raise ShipError(f"the bundle holds {fetched[:12]}, not the announced {tip[:12]}")
    if not _descends(root, tip, base):
        raise ShipError(f"the branch that came back ({tip[:12]}) does not descend from what was sent ({base[:12]})")
    if order.worktree:
        try:
            git(root, "merge", "-q", "--ff-only", tip)
        except ShipError as error:  # the worktree changed meanwhile: keep the commits where they can be found
            kept = f"refs/team-executor/returned/{order.task_id}"
            git(root, "update-ref", kept, tip)
            return _failed(result, f"its worktree did not take the node's work ({error}); it is kept as {kept}")
        return result
    agent = returned.agent_head if returned.agent_head is not None and is_object(returned.agent_head) else base
    head = head_commit(root)
    start = base
    kept_back = _kept_back(root, Path(order.session_dir))
    excluded = [f":(top,exclude,literal){prefix}" for prefix in kept_back]
    if (
        agent != base
        and head == base
        and _descends(root, agent, base)
        and _descends(root, tip, agent)
        and not git(root, "diff", "--name-only", base, agent, "--", *(f":(top,literal){path}" for path in kept_back))
    ):
        try:
            git(root, "merge", "-q", "--ff-only", agent)  # the agent's own commits, as it made them
            start = agent
        except ShipError:
            pass  # the work tree holds changes in their way: all of it is applied uncommitted instead
    patch = git(root, "diff", "--no-ext-diff", "--no-textconv", "--binary", start, tip, "--", ":/", *excluded)
    if patch:
        try:
            git(root, "apply", "--whitespace=nowarn", stdin=patch)
        except ShipError as error:
            git(root, "update-ref", f"refs/heads/{branch}", tip)
            return _failed(
                result, f"its work does not apply to the project as it is now ({error}); it is on branch {branch}"
            )
    return result


def _descends(root: Path, later: str, earlier: str) -> bool:
    try:
        git(root, "merge-base", "--is-ancestor", earlier, later)
    except ShipError:
        return False
    return True
