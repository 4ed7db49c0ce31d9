"""A worker's log on disk holds none of the secrets in its environment, even when printed in pieces."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from backends.process import run_process
from backends.process_types import ProcessLimits, ProcessSpec
from backends.sandbox import allowlisted_env

KEY = "worker-env-KEY-value-0123456789"


def test_a_key_from_the_environment_printed_in_pieces_never_reaches_the_log(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import os, sys, time
        key = os.environ["SOME_SERVICE_API_KEY"]
        sys.stdout.write("start " + key[:9]); sys.stdout.flush(); time.sleep(0.2)
        sys.stdout.write(key[9:] + " end\\n"); sys.stdout.flush()
        print("error: refused " + key, file=sys.stderr)
        sys.stdout.write("no newline at the end " + key)
        """
    )
    log = tmp_path / "logs" / "run.log"
    spec = ProcessSpec(
        argv=(sys.executable, "-c", code),
        cwd=str(tmp_path),
        env=allowlisted_env(extra={"SOME_SERVICE_API_KEY": KEY}),
        log_path=str(log),
    )
    outcome = run_process(spec, ProcessLimits(wall_timeout_s=60))
    assert outcome.exit_code == 0, outcome
    text = log.read_text()
    assert KEY not in text
    assert "start …6789 end" in text
    assert "error: refused …6789" in text
    assert "no newline at the end …6789" in text
