"""How much CPU the executor keeps beside busy agents started at the agents' niceness.

The executor starts every agent at ``[run].agent_nice`` (5 by default) so that on a busy
machine the executor, its bridge and the user's shell get the CPU first.  Where the kernel
groups scheduling by session (autogroup: ``/proc/sys/kernel/sched_autogroup_enabled``, on by
default on most desktop Linux), a child in a session of its own is a scheduling group of its
own and its niceness ranks it only among its own descendants.

This script counts how many turns a busy loop in this process makes per second: alone, then
beside ``--agents`` CPU-bound children (a Python busy loop each) started at niceness 5 by
each way: the spawn helper (a process group of its own, in our session), and ``Popen`` with
``start_new_session=True`` (what every attempt got before 2026-12-07).  Reported: each
share as a fraction of the loop's speed alone, and what a fair share would be.

Usage: python benchmarks/agent_share.py [--agents 8] [--seconds 3] [--nice 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backends import spawn

_BUSY = "while True: pass"


def turns_per_second(seconds: float) -> float:
    count = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(1000):
            count += 1
    return count / seconds


def with_agents(how: str, agents: int, nice: int, seconds: float) -> float:
    argv = (sys.executable, "-c", _BUSY)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    children: list[spawn.Child] = []
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        for _ in range(agents):
            if how == "helper":
                child, _joined = spawn.start(argv, env=env, cwd="/", stdin=devnull, cgroup=None, nice=nice)
            else:
                child = subprocess.Popen(
                    argv,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                os.setpriority(os.PRIO_PROCESS, child.pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + nice))
            children.append(child)
        time.sleep(0.5)  # every agent running
        return turns_per_second(seconds)
    finally:
        os.close(devnull)
        for child in children:
            os.kill(child.pid, 9)
            child.wait()
            for stream in (child.stdin, child.stdout, child.stderr):
                if stream is not None:
                    stream.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--nice", type=int, default=5)
    options = parser.parse_args()
    if spawn.HELPER is None:
        sys.exit("the spawn helper is not built here (pip install -e . with a C compiler)")
    try:
        autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip()
    except OSError:
        autogroup = "absent"
    cores = os.cpu_count() or 1
    print(
        f"machine: {platform.node() or 'vm'} {platform.machine()} {cores} cores, Python {platform.python_version()}, "
        f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, autogroup {autogroup}, load {os.getloadavg()[0]:.2f}"
    )
    alone = turns_per_second(options.seconds)
    # With n busy processes of equal weight on c cores, each would get c / (n + 1) of a core.
    fair = min(1.0, cores / (options.agents + 1))
    print(f"alone: {alone / 1e6:.1f} M turns/s; a fair share beside {options.agents} agents: {fair:.0%}")
    for how in ("session", "helper", "session", "helper"):
        speed = with_agents(how, options.agents, options.nice, options.seconds)
        label = "Popen, a session of its own" if how == "session" else "spawn helper, our session"
        print(f"  {label:30s} nice {options.nice}: {speed / alone:6.1%} of alone")


if __name__ == "__main__":
    main()
