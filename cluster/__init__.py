"""Attempts on a Ray cluster: the effect of "start this attempt", placed on a node.

The control plane stays in the executor (the event log, the lock, the bridge); only an
attempt's process runs elsewhere, inside an :class:`cluster.host.AttemptHost` actor.
Ray is optional (``pip install 'team-executor[ray]'``); nothing here imports it at module
load, so the rest of the executor runs without it.
"""
