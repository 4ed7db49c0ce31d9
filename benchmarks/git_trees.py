"""What recording an attempt's git state costs: ``capture_tree`` on repositories of growing size.

A git repository of N tracked files (committed), 20 of them modified and 5 new untracked files,
and a session folder inside it (excluded). The worker captures the tree twice per attempt.

    python benchmarks/git_trees.py --files 1000 --files 10000
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from session.git_trees import capture_tree
from session.own_paths import own_prefixes


def _repo(root: Path, files: int) -> Path:
    for index in range(files):
        folder = root / f"pkg{index // 100}"
        folder.mkdir(exist_ok=True)
        (folder / f"mod{index}.py").write_text(f"VALUE = {index}\n" * 20)
    git = ["git", "-C", str(root), "-c", "user.name=b", "-c", "user.email=b@localhost"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    for index in range(min(files, 20)):
        (root / f"pkg{index // 100}" / f"mod{index}.py").write_text("changed\n")
    for index in range(5):
        (root / f"new{index}.py").write_text("new\n")
    session = root / ".workflow" / ".team" / "S"
    (session / ".executor" / "logs").mkdir(parents=True)
    (session / ".executor" / "logs" / "A-a1.log").write_text("x" * 100_000)
    return session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, action="append", help="tracked files (repeatable)")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print("| tracked files | capture median | max |\n|---|---|---|")
    for files in args.files or [1000]:
        with tempfile.TemporaryDirectory() as scratch:
            root = Path(scratch)
            session = _repo(root, files)
            exclude = own_prefixes(root, session)
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                capture_tree(root, exclude)
                times.append(time.perf_counter() - start)
            print(f"| {files:,} | {statistics.median(times) * 1000:.1f} ms | {max(times) * 1000:.1f} ms |")


if __name__ == "__main__":
    main()
