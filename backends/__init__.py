"""Backends: turn a work order into an agent run (see ``backends.base`` and ``backends.registry``).

Keep this file free of imports: the demo agent runs as ``python -m backends.demo_agent``,
which imports this package first, and it must start in milliseconds.
"""
