"""The cyclic garbage collector while a command starts: paused, then frozen and resumed.

A command's start imports typer, pydantic (and builds our models' schemas), rich, sqlite-utils
and our modules: ~90,000 objects the collector tracks.  With it on, generation 0 is collected
every 700 new objects and every survivor is walked again in generations 1 and 2: ~130
collections on the way, 40-80 ms of each start (20% of the imports; `executor check` ~9% faster
without them), to find under 1 MB of garbage.  So the console script pauses it before it imports
anything (:func:`pause`), and a long command resumes it once what it builds once is built
(:func:`resume`, the run after its tree and mirror start): everything alive then is frozen first
(``gc.freeze``: modules, classes, schemas and the session's models live as long as the process,
and later collections no longer walk them), then collection goes on as usual.

A command that never says so (a short one exits first; a long one that forgot) gets its
collector back after :data:`LONGEST_PAUSE_S` all the same: no process runs long without it.
Only a pause of ours is resumed: a collector someone else turned off stays off, and in a process
that never paused (a test calling the run in-process) :func:`resume` does nothing.
"""

from __future__ import annotations

import gc
import threading

__all__ = ["LONGEST_PAUSE_S", "pause", "paused", "resume"]

#: The longest a pause lasts: a run resumes well before (its start takes ~0.5 s).
LONGEST_PAUSE_S = 5.0


class _Pause:
    """This process's pause: whether one is on, under a lock (the timer resumes from its thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.on = False
        self.timer: threading.Timer | None = None


_pause = _Pause()


def pause(longest_s: float = LONGEST_PAUSE_S) -> None:
    """Turn the collector off until :func:`resume`, or ``longest_s`` from now at the latest."""
    with _pause.lock:
        if _pause.on or not gc.isenabled():
            return
        gc.disable()
        _pause.on = True
        timer = _pause.timer = threading.Timer(longest_s, resume)
    timer.daemon = True  # never what keeps a finished command alive
    timer.name = "collector-resume"
    timer.start()


def resume() -> None:
    """End this process's pause: freeze what is alive, turn the collector back on.  Idempotent."""
    with _pause.lock:
        if not _pause.on:
            return
        _pause.on = False
        gc.freeze()
        gc.enable()
        timer, _pause.timer = _pause.timer, None
    if timer is not None:
        timer.cancel()  # its thread ends now, rather than wake later to find nothing to do


def paused() -> bool:
    """Whether a pause of ours is on."""
    return _pause.on
