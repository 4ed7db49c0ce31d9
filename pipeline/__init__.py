"""The pipeline core: every scheduling decision of a run, pure and synchronous.

One object (:class:`pipeline.core.Pipeline`) owns the only in-memory copy of the task
table and turns each input — an attempt finished, a worker died, an answer, a submitted
task, a tick of the clock — into a list of effects (:mod:`pipeline.effects`): record
these events, start this attempt, stop that one, tell the user, ask the user.  No
threads, no pykka, no I/O, no clock of its own: the time comes in with each input, so
tests drive it with a manual clock.  The Executor actor is its mailbox: it calls the
core and carries the effects out (records first, committed; then what becomes visible).

Layering: ``pipeline`` imports ``protocol`` and the pure parts of ``session``; ``actors``
imports ``pipeline``.
"""
