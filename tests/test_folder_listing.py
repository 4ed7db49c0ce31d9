"""artifacts/ kept listed from the kernel's notices: always what a fresh listing would say.

Real folders on this machine's disk (tmp_path) and a real child process writing into one;
the filesystem-type lookup is tested on mountinfo text.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from backends import folder_listing
from backends.folder_listing import fstype_of, listing

pytestmark = pytest.mark.skipif(folder_listing.INotify is None, reason="no inotify on this system")


def _fresh(folder: Path) -> list[tuple[str, str]]:
    return folder_listing._scan(str(folder)) or []


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    if not folder_listing._on_local_disk(str(tmp_path)):
        pytest.skip("the test folder is not on a local filesystem here")
    made = tmp_path / "artifacts"
    made.mkdir()
    (made / "T-1-out.md").write_text("x")
    return made


def _watcher(folder: Path) -> folder_listing._Watched:
    watched = folder_listing._watcher(str(folder))
    assert watched is not None, "a folder on a local disk is watched"
    return watched


def test_every_change_is_in_the_next_listing_without_listing_the_folder_again(folder: Path) -> None:
    assert listing(folder) == [("T-1-out.md", "file")]
    watched = _watcher(folder)
    (folder / "T-2-out.md").write_text("x")
    (folder / "T-3").mkdir()
    (folder / "T-3" / "inside.md").write_text("x")  # inside a folder: not an entry of this one
    (folder / "T-4.md").symlink_to(folder / "T-1-out.md")
    os.rename(folder / "T-1-out.md", folder / "T-1-final.md")
    (folder / "T-2-out.md").unlink()
    (folder / "T-5").write_text("a file first")
    (folder / "T-5").unlink()
    (folder / "T-5").mkdir()  # then a folder of the same name
    assert listing(folder) == _fresh(folder)
    assert listing(folder) == [("T-1-final.md", "file"), ("T-3", "dir"), ("T-4.md", "other"), ("T-5", "dir")]
    assert watched.scans == 1, "the folder was listed again instead of kept current"


def test_what_a_finished_process_wrote_is_there_when_it_has_exited(folder: Path) -> None:
    listing(folder)
    script = "for i in $(seq 1 200); do echo x > A-$i.md; done; mv A-1.md B-1.md; rm A-2.md; mkdir C"
    subprocess.run(["sh", "-c", script], cwd=folder, check=True)
    entries = listing(folder)
    assert entries == _fresh(folder)
    assert len(entries) == 1 + 198 + 1 + 1  # T-1-out.md, A-3..A-200, B-1.md, C
    assert ("B-1.md", "file") in entries
    assert ("A-2.md", "file") not in entries


def test_a_listing_handed_out_is_never_changed_afterwards(folder: Path) -> None:
    before = listing(folder)
    copy = list(before)
    (folder / "T-9.md").write_text("x")
    after = listing(folder)
    assert before == copy
    assert ("T-9.md", "file") in after


def test_lost_notices_mean_a_new_listing(folder: Path) -> None:
    listing(folder)
    watched = _watcher(folder)
    (folder / "T-7.md").write_text("x")
    overflow = [type("Event", (), {"mask": folder_listing._OVERFLOW, "name": ""})()]
    assert watched._applied(overflow) == _fresh(folder)
    assert watched.scans == 2


def test_a_folder_removed_and_made_again_is_listed_from_its_new_self(folder: Path) -> None:
    listing(folder)
    shutil.rmtree(folder)
    assert listing(folder) == []
    folder.mkdir()
    (folder / "N-1.md").write_text("x")
    assert listing(folder) == [("N-1.md", "file")]
    (folder / "N-2.md").write_text("x")
    assert listing(folder) == [("N-1.md", "file"), ("N-2.md", "file")]


def test_a_missing_folder_lists_empty_until_it_exists(tmp_path: Path) -> None:
    later = tmp_path / "later"
    assert listing(later) == []
    later.mkdir()
    (later / "X-1.md").write_text("x")
    assert listing(later) == [("X-1.md", "file")]


MOUNTINFO = [
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n",
    "30 22 0:26 / /dev/shm rw,nosuid,nodev shared:2 - tmpfs tmpfs rw\n",
    "40 22 0:50 / /mnt/team\\040share rw,relatime shared:3 - nfs4 server:/export rw,vers=4.2\n",
    "41 22 0:51 / /mnt/over rw - ext4 /dev/sdb1 rw\n",
    "42 41 0:52 / /mnt/over rw - nfs server:/other rw\n",  # mounted on top of the one before
]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/home/me/session/artifacts", "ext4"),
        ("/dev/shm/s/artifacts", "tmpfs"),
        ("/dev/shmx/artifacts", "ext4"),  # a name that only starts like a mount point
        ("/mnt/team share/s/artifacts", "nfs4"),
        ("/mnt/over/s", "nfs"),
        ("/", "ext4"),
    ],
)
def test_the_filesystem_of_a_path_is_that_of_the_mount_holding_it(path: str, expected: str) -> None:
    assert fstype_of(path, MOUNTINFO) == expected


def test_a_folder_on_a_network_filesystem_is_not_watched(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Another machine's writes raise no notice here: such a folder is listed whenever its mtime moves.
    monkeypatch.setattr(folder_listing, "_on_local_disk", lambda _folder: False)
    shared = tmp_path / "shared"
    shared.mkdir()
    assert folder_listing._watcher(str(shared)) is None
    (shared / "R-1.md").write_text("x")
    assert listing(shared) == [("R-1.md", "file")]


def test_a_forked_child_watches_for_itself_and_the_parent_still_sees_everything(folder: Path) -> None:
    listing(folder)
    pid = os.fork()
    if pid == 0:  # the child: its own watch, not the parent's descriptor (whose notices it would take)
        (folder / "CHILD.md").write_text("x")
        ok = ("CHILD.md", "file") in listing(folder) and folder_listing._watched[str(folder)] is not None
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    (folder / "PARENT.md").write_text("x")
    assert listing(folder) == _fresh(folder)
    assert ("CHILD.md", "file") in listing(folder)
