"""The node's side of a git-shipped attempt: a private clone, the agent, the branch sent back.

Runs inside an :class:`cluster.host.AttemptHost` on the node.  The project comes as a
bundle; it is fetched into a new repository in a private temporary folder on the node
(never a folder of the head's), the task's branch is checked out there, the session's
context files are written beside it, and the work order's paths are rewritten to point
at them.  After the agent: whatever it left uncommitted is committed with the same
author and message as a local worktree commit, the branch goes back as a bundle of the
new commits only, with the attempt's artifacts and log.  The folder is removed after.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import msgspec

from cluster.shipping import (
    MAX_ARTIFACT_BYTES,
    MAX_ARTIFACTS,
    MAX_BUNDLE_BYTES,
    MAX_LOG_BYTES,
    MAX_REPORT_BYTES,
    Returned,
    ShipError,
    Shipment,
    git,
    plain_relative,
    ship_ref,
)
from protocol.messages import AttemptResult, WorkOrder
from session.worktrees import WorktreeError, commit_all

__all__ = ["NodeCheckout"]

SCRATCH_PREFIX = "team-executor-attempt-"


class NodeCheckout:
    """One attempt's clone and session folder on this node; :meth:`remove` deletes both."""

    def __init__(self, order: WorkOrder, shipment: Shipment, bundle: bytes) -> None:
        self.order = order
        self.shipment = shipment
        self.bundle = bundle
        self.scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX))
        self.repo = self.scratch / "work"
        self.session = self.scratch / "session"

    def _moved(self, head_path: str) -> str:
        """A path of the head's session folder, at the same place in the node's."""
        try:
            relative = Path(head_path).relative_to(self.order.session_dir)
        except ValueError:
            relative = Path(".executor", "elsewhere", Path(head_path).name)
        return str(self.session / relative)

    def prepare(self) -> WorkOrder:
        """Check the branch out and write the context; the work order as the agent here sees it."""
        shipment = self.shipment
        self.repo.mkdir()
        bundle = self.scratch / "in.bundle"
        bundle.write_bytes(self.bundle)
        self.bundle = b""
        git(self.repo, "init", "-q")
        fetch = ("fetch", "-q", "--no-tags", str(bundle))
        # The other tasks' branches come too: an adjudicator compares and merges them.
        git(self.repo, *fetch, "+refs/heads/team-executor/*:refs/heads/team-executor/*")
        git(self.repo, *fetch, f"+{ship_ref(self.order.task_id)}:refs/heads/{shipment.branch}")
        git(self.repo, "checkout", "-q", shipment.branch)
        bundle.unlink()
        for name, data in shipment.files:
            relative = plain_relative(name)
            if relative is None:
                continue
            target = self.session / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        (self.session / "artifacts").mkdir(parents=True, exist_ok=True)
        workdir = self.repo / shipment.workdir if shipment.workdir else self.repo
        workdir.mkdir(parents=True, exist_ok=True)
        order = self.order
        return msgspec.structs.replace(
            order,
            session_dir=str(self.session),
            artifacts_dir=self._moved(order.artifacts_dir),
            workdir=str(workdir),
            prompt_file=self._moved(order.prompt_file),
            report_file=self._moved(order.report_file),
            log_path=self._moved(order.log_path),
            worktree=False,  # the clone is the attempt's own already
        )

    def finish(self, local: WorkOrder, result: AttemptResult) -> tuple[AttemptResult, Returned]:
        """Commit the leftovers, bundle the branch; the result in the head's terms, and what goes back."""
        result = self._head_paths(local, result)
        artifacts, log = self._artifacts(result), self._log_tail(local)
        report = Path(local.report_file)
        sent = report.is_file() and not report.is_symlink() and report.stat().st_size <= MAX_REPORT_BYTES
        report_bytes = report.read_bytes() if sent else b""
        try:
            agent_head = git(self.repo, "rev-parse", "--verify", "-q", "HEAD").decode().strip()
            try:
                tip = commit_all(self.repo, f"{self.order.task_id}: attempt {self.order.attempt} (team-executor)")
            except WorktreeError as error:
                raise ShipError(str(error)) from None
            tip = tip or agent_head
            if tip == self.shipment.base:
                return result, Returned(artifacts=artifacts, log=log, report=report_bytes)
            branch = f"refs/heads/{self.shipment.branch}"
            git(self.repo, "update-ref", branch, tip)
            out = self.scratch / "out.bundle"
            git(self.repo, "bundle", "create", "-q", str(out), branch, f"^{self.shipment.base}")
            if out.stat().st_size > MAX_BUNDLE_BYTES:
                raise ShipError(f"the branch's bundle is {out.stat().st_size >> 20} MiB, over the limit")
            bundle = out.read_bytes()
            return result, Returned(tip, agent_head, bundle, artifacts, log=log, report=report_bytes)
        except ShipError as error:
            return result, Returned(artifacts=artifacts, problem=str(error), log=log, report=report_bytes)

    def _head_paths(self, local: WorkOrder, result: AttemptResult) -> AttemptResult:
        """Files the agent names by their path in the clone, named as the head knows them."""
        head_workdir, here = Path(self.order.workdir), Path(local.workdir)
        renamed = []
        for path in result.files_modified:
            try:
                renamed.append(str(head_workdir / Path(path).relative_to(here)) if Path(path).is_absolute() else path)
            except ValueError:
                renamed.append(path)
        return msgspec.structs.replace(result, files_modified=tuple(renamed))

    def _artifacts(self, result: AttemptResult) -> tuple[tuple[str, bytes], ...]:
        found: list[tuple[str, bytes]] = []
        for name in result.artifacts[:MAX_ARTIFACTS]:
            relative = plain_relative(name, under="artifacts")
            if relative is None:
                continue
            path = self.session / relative
            if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_ARTIFACT_BYTES:
                continue
            found.append((relative.as_posix(), path.read_bytes()))
        return tuple(found)

    def _log_tail(self, local: WorkOrder) -> bytes:
        path = Path(local.log_path)
        if not path.is_file():
            return b""
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - MAX_LOG_BYTES))
            return handle.read()

    def remove(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
