"""Starting a child (backends/spawn.py): the compiled helper against what Popen and the shell did.

The helper must give the child everything ``subprocess.Popen(..., start_new_session=True,
close_fds=True)`` behind ``sh -c 'echo $$ > cgroup.procs; exec ...'`` gave it, with no shell in
between.  Each test looks at a real child from the outside (/proc) while it waits for us.
"""

from __future__ import annotations

import errno
import os
import platform
import shutil
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from backends import spawn
from backends.containment import AttemptCgroup, cgroups_available

needs_helper = pytest.mark.skipif(spawn.HELPER is None, reason="the spawn helper is not built here")


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {name: value.strip() for name, _, value in (line.partition(":") for line in lines)}


def _started(tmp_path: Path, **options: object) -> Iterator[tuple[spawn.Child, bool]]:
    """A child running `cat` (it echoes a line back: the program runs, not just its exec has
    begun, so /proc shows its environment) until we close its stdin; reaped at the end."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ONLY": "this"}
    child, contained = spawn.start(("cat",), env=env, cwd=str(tmp_path), stdin=None, **options)  # type: ignore[arg-type]
    try:
        assert child.stdin is not None
        assert child.stdout is not None
        child.stdin.write(b"ready\n")
        echoed = b""
        while not echoed.endswith(b"\n"):
            chunk = child.stdout.read(64)
            assert chunk, "cat ended before it echoed"
            echoed += chunk
        assert echoed == b"ready\n"
        yield child, contained
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
        for stream in (child.stdout, child.stderr):
            assert stream is not None
            stream.close()


def _clone3_state(allow: bool | None = None) -> tuple[bool, int]:
    from backends import _spawn  # noqa: PLC0415 - only where the helper was built

    return _spawn.clone3_state(allow)


@pytest.fixture(params=["born in it", "joining after the clone"])
def join_way(request: pytest.FixtureRequest) -> Iterator[str]:
    """Both ways a helper-started child gets into its cgroup: created there by clone3, where the
    kernel allows it; else it writes its pid to cgroup.procs before its exec."""
    if spawn.HELPER is None:
        yield request.param
        return
    before, _ = _clone3_state()
    _clone3_state(request.param == "born in it")
    yield request.param
    _clone3_state(before)


@pytest.fixture
def cgroup() -> Iterator[AttemptCgroup | None]:
    made = AttemptCgroup.create("test-spawn") if cgroups_available() else None
    yield made
    if made is not None:
        made.remove()


def _terminal_of(pid: int) -> int:
    """The controlling terminal's device number from /proc (0: none)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[4])


@needs_helper
def test_the_helper_runs_the_program_itself_in_the_cgroup_in_a_process_group_of_its_own(
    tmp_path: Path, cgroup: AttemptCgroup | None, join_way: str
) -> None:
    for child, contained in _started(tmp_path, cgroup=cgroup, nice=3):
        pid = child.pid
        assert os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath(shutil.which("cat") or "")  # no shell
        assert os.getpgid(pid) == pid  # the run signals the group
        # In our session, so in our scheduling group where the kernel groups by session: the
        # niceness below ranks it under us, not only among its own descendants.
        assert os.getsid(pid) == os.getsid(0)
        if os.path.exists("/proc/self/autogroup"):
            # Empty for both where we are in the default group (a session that no setsid made,
            # as in some containers): the kernel names no group then.
            assert Path(f"/proc/{pid}/autogroup").read_text() == Path("/proc/self/autogroup").read_text()
        assert _terminal_of(pid) == 0
        assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 3)
        assert Path(os.readlink(f"/proc/{pid}/cwd")) == tmp_path
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert sorted(filter(None, environ)) == sorted([b"ONLY=this", f"PATH={os.environ.get('PATH')}".encode()])
        if cgroup is not None:
            assert contained
            assert str(pid) in (cgroup.path / "cgroup.procs").read_text().split()


@needs_helper
@pytest.mark.skipif(not cgroups_available(), reason="attempts run in cgroups only where one can be made")
def test_where_the_kernel_allows_it_a_child_is_born_in_its_cgroup(tmp_path: Path, cgroup: AttemptCgroup) -> None:
    # Joining after the clone moves a live process: the kernel holds every fork, exec and exit on
    # the machine meanwhile.  Born there, nothing moves.
    from backends import _spawn  # noqa: PLC0415 - only where the helper was built

    assert (platform.machine() == "x86_64") == _spawn.HAS_CLONE3, "the helper's clone3 way: x86-64 has it"
    if not _spawn.HAS_CLONE3:
        pytest.skip("the helper starts children in their cgroup by clone3 on x86-64 only")
    tried, born = _clone3_state(True)
    assert tried
    for child, contained in _started(tmp_path, cgroup=cgroup, nice=0):
        assert contained
        assert str(child.pid) in (cgroup.path / "cgroup.procs").read_text().split()
    still_tried, born_now = _clone3_state()
    if not still_tried:
        pytest.skip("this kernel (or its seccomp filter) refuses clone3 into a cgroup: children join after the clone")
    assert born_now == born + 1
    # Without a cgroup there is nothing to be born in: the plain clone, as before.
    for _ in _started(tmp_path, cgroup=None, nice=0):
        pass
    assert _clone3_state() == (True, born + 1)


# Run in a session of its own whose terminal is a pseudo-terminal: it starts a child that tries to
# open /dev/tty, then opens it itself.
_ON_A_TERMINAL = """
import fcntl, os, sys, termios
from backends import spawn
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
child, _ = spawn.start(
    (sys.executable, sys.argv[1]), env={"PATH": os.environ["PATH"]}, cwd=os.getcwd(), stdin=None, cgroup=None, nice=0
)
print(child.stdout.read().decode().strip(), child.wait())
os.close(os.open("/dev/tty", os.O_RDWR))
print("ours")
"""

_OPENS_THE_TERMINAL = """
import os
try:
    os.close(os.open("/dev/tty", os.O_RDWR))
    print("opened")
except OSError as error:
    print(error.errno)
"""


@needs_helper
def test_a_child_cannot_reach_the_terminal_the_executor_runs_on(tmp_path: Path) -> None:
    # An agent that reads /dev/tty would wait for a person forever (or be stopped for trying, in
    # the background): it must find no terminal, while the executor keeps its own.
    leader, follower = os.openpty()
    try:
        opener = tmp_path / "opens_the_terminal.py"
        opener.write_text(_OPENS_THE_TERMINAL)
        result = subprocess.run(
            [sys.executable, "-c", _ON_A_TERMINAL, str(opener)],
            stdin=follower,
            capture_output=True,
            cwd=str(Path(__file__).resolve().parent.parent),
            start_new_session=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split() == [str(errno.ENXIO), "0", "ours"]


@needs_helper
def test_the_child_holds_only_its_three_descriptors_and_no_signal_of_ours(tmp_path: Path) -> None:
    leaked = os.open(os.devnull, os.O_RDONLY)  # inheritable on purpose: the child must not get it
    os.set_inheritable(leaked, True)
    try:
        for child, _ in _started(tmp_path, cgroup=None, nice=0):
            assert sorted(int(fd) for fd in os.listdir(f"/proc/{child.pid}/fd")) == [0, 1, 2]
            status = _status(child.pid)
            # Python ignores SIGPIPE and SIGXFSZ and catches SIGINT: the child gets the defaults,
            # and no signal blocked (the helper blocks them all around its clone).  What this
            # process was started ignoring (nohup, a background job) stays ignored, as with Popen.
            python_ignores = (1 << (signal.SIGPIPE - 1)) | (1 << (signal.SIGXFSZ - 1))
            inherited = int(_status(os.getpid())["SigIgn"], 16) & ~python_ignores
            assert int(status["SigIgn"], 16) == inherited
            assert int(status["SigBlk"], 16) == 0
            assert int(status["SigCgt"], 16) == 0
    finally:
        os.close(leaked)


@needs_helper
def test_what_cannot_start_says_why_as_popen_does(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin"}
    script = tmp_path / "script.sh"
    script.write_text("echo hi\n")  # not executable
    text = tmp_path / "data"
    text.write_text("not a program\n")
    text.chmod(0o755)
    cases = [
        (("no-such-program-xyz",), str(tmp_path), FileNotFoundError, "no-such-program-xyz"),
        ((str(script),), str(tmp_path), PermissionError, str(script)),
        (("/bin/true",), str(tmp_path / "missing"), FileNotFoundError, str(tmp_path / "missing")),
        ((str(text),), str(tmp_path), OSError, str(text)),  # ENOEXEC: no shell guesses for us
    ]
    open_before = sorted(os.listdir("/proc/self/fd"))
    for argv, cwd, error, filename in cases:
        with pytest.raises(error) as raised:
            spawn.start(argv, env=env, cwd=cwd, stdin=None, cgroup=None, nice=0)
        assert raised.value.filename == filename
    # Nothing was left behind: every child that failed was reaped, every pipe closed.
    assert [child for child in psutil.Process().children() if child.status() == psutil.STATUS_ZOMBIE] == []
    assert sorted(os.listdir("/proc/self/fd")) == open_before


def test_the_helper_is_built_wherever_the_install_had_a_c_compiler() -> None:
    # The fallback works everywhere, so a helper that silently failed to build would only
    # show as a slower run: here it fails a test instead.
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None or not os.path.exists(sysconfig.get_paths()["include"]):
        pytest.skip("no C compiler or no Python headers here: the helper is optional")
    assert spawn.HELPER is not None, "pip install -e . should have compiled backends/_spawn.c (see hatch_build.py)"


@needs_helper
def test_a_child_its_cgroup_refuses_runs_outside_it_and_the_run_knows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, join_way: str
) -> None:
    # The shell before it ran the program uncontained without a word when the join failed; now
    # the run is told, and follows the child by its descendants.  A folder that is no cgroup is
    # a join the kernel refuses, as a cgroup over a limit is.
    plain = tmp_path / "not-a-cgroup"
    plain.mkdir()
    monkeypatch.setattr(spawn, "_open_cgroup", lambda cgroup: os.open(plain, os.O_RDONLY | os.O_DIRECTORY))
    for child, contained in _started(tmp_path, cgroup=AttemptCgroup(plain), nice=0):
        assert not contained
        assert os.path.realpath(f"/proc/{child.pid}/exe") == os.path.realpath(shutil.which("cat") or "")


@needs_helper
@pytest.mark.skipif(not cgroups_available(), reason="attempts run in cgroups only where one can be made")
def test_a_cgroup_removed_while_the_child_starts_leaves_it_outside_and_clone3_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, join_way: str
) -> None:
    gone = AttemptCgroup.create("test-spawn-removed")
    assert gone is not None

    def opened_then_removed(cgroup: AttemptCgroup | None) -> int:
        folder = os.open(gone.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        gone.path.rmdir()
        return folder

    monkeypatch.setattr(spawn, "_open_cgroup", opened_then_removed)
    tried, _ = _clone3_state()
    for child, contained in _started(tmp_path, cgroup=gone, nice=0):
        assert not contained
        assert child.poll() is None
    # One cgroup gone is no reason to stop starting children in theirs.
    assert _clone3_state()[0] == tried


@pytest.mark.skipif(not cgroups_available(), reason="attempts run in cgroups only where one can be made")
def test_a_cgroup_removed_before_the_start_leaves_the_child_outside_it(tmp_path: Path) -> None:
    gone = AttemptCgroup.create("test-spawn-gone")
    assert gone is not None
    gone.path.rmdir()
    if spawn.HELPER is None:
        pytest.skip("the shell of the fallback still joins silently (it cannot say it failed)")
    for child, contained in _started(tmp_path, cgroup=gone, nice=0):
        assert not contained
        assert child.poll() is None


@pytest.mark.skipif(not os.path.exists("/proc/self/autogroup"), reason="no autogroups in this kernel")
@pytest.mark.skipif(os.geteuid() != 0, reason="a user without CAP_SYS_ADMIN gets ten group changes a second")
def test_without_the_helper_the_childs_own_session_gets_its_niceness_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Popen's child has a session, so a scheduling group, of its own: its niceness alone would
    # rank it only among its own descendants, not below the executor.
    monkeypatch.setattr(spawn, "HELPER", None)
    wanted = min(19, os.getpriority(os.PRIO_PROCESS, 0) + 4)
    for child, _ in _started(tmp_path, cgroup=None, nice=4):
        assert os.getsid(child.pid) == child.pid
        assert Path(f"/proc/{child.pid}/autogroup").read_text().split()[1:] == ["nice", str(wanted)]


@needs_helper
def test_waiting_with_a_timeout_is_told_of_the_exit_or_gives_up_at_the_timeout(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    ends, _ = spawn.start(("sh", "-c", "exit 3"), env=env, cwd=str(tmp_path), stdin=None, cgroup=None, nice=0)
    sleeps, _ = spawn.start(("sleep", "30"), env=env, cwd=str(tmp_path), stdin=None, cgroup=None, nice=0)
    try:
        assert ends.wait(timeout=30) == 3
        assert ends.wait(timeout=30) == 3  # reaped already: the code it had, no look at a reused pid
        with pytest.raises(subprocess.TimeoutExpired):
            sleeps.wait(timeout=0.2)
        assert sleeps.poll() is None  # it gave up at its timeout, while the child still ran
    finally:
        os.kill(sleeps.pid, signal.SIGKILL)
        assert sleeps.wait() == -signal.SIGKILL
        for child in (ends, sleeps):
            for stream in (child.stdin, child.stdout, child.stderr):
                if stream is not None:
                    stream.close()
