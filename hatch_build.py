"""Build backends/_spawn.c, the spawn helper, when the project is installed (wheel or editable).

The helper starts a program in its attempt's cgroup without a shell (see the file's header).
It is optional: where no C compiler or no Python headers are found, the install goes on with
a warning and attempts start through ``subprocess`` and ``/bin/sh`` as before
(``backends.spawn.HELPER`` is None then; tests/test_spawn.py fails where a compiler was there).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("backends") / "_spawn.c"


def compile_helper(root: Path) -> Path | None:
    """Compile the helper next to its source; its path, or None (and why, on stderr)."""
    if not sys.platform.startswith("linux"):
        return None  # clone(2) and cgroups: Linux only
    source = root / SOURCE
    target = source.with_name("_spawn" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
    compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    if not compiler or shutil.which(compiler[0]) is None:
        named = compiler[0] if compiler else "CC"
        sys.stderr.write(f"team-executor: no C compiler ({named}): the spawn helper is not built\n")
        return None
    include = sysconfig.get_paths()["include"]
    command = [*compiler, "-O2", "-Wall", "-shared", "-fPIC", f"-I{include}", str(source), "-o", str(target)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        sys.stderr.write(f"team-executor: the spawn helper is not built: {error}\n")
        return None
    if result.returncode != 0:
        sys.stderr.write(f"team-executor: the spawn helper is not built:\n{result.stderr}\n")
        target.unlink(missing_ok=True)  # never leave an older build to be loaded
        return None
    return target


class SpawnHelperHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return  # the sdist carries the source; its install builds it
        built = compile_helper(Path(self.root))
        if built is None:
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":  # an editable install imports it where it was built
            build_data["force_include"][str(built)] = f"backends/{built.name}"
