"""``executor cluster status``: the nodes, their labels (custom resources) and running attempts."""

from __future__ import annotations

from typing import Any

from cluster.connect import connect, import_ray

__all__ = ["cluster_status", "format_status"]

_STANDARD = {"CPU", "GPU", "memory", "object_store_memory"}


def cluster_status(address: str, namespace: str) -> list[dict[str, Any]]:
    """One dict per node: id, address, alive, labels, the attempt actors on it."""
    ray = connect(address, namespace)
    import_ray()
    from ray.util.state import list_actors  # noqa: PLC0415 - optional dependency

    attempts: dict[str, list[str]] = {}
    for actor in list_actors(filters=[("state", "=", "ALIVE")], limit=10_000):
        name = getattr(actor, "name", "") or ""
        if name.startswith("attempt:"):
            attempts.setdefault(actor.node_id or "", []).append(name)
    rows = []
    for node in ray.nodes():
        resources = node.get("Resources", {})
        labels = {
            key: value
            for key, value in resources.items()
            if key not in _STANDARD and not key.startswith("node:") and not key.startswith("accelerator_type")
        }
        rows.append(
            {
                "node_id": node["NodeID"],
                "address": node.get("NodeManagerAddress", ""),
                "alive": bool(node.get("Alive")),
                "cpus": resources.get("CPU", 0),
                "labels": labels,
                "attempts": sorted(attempts.get(node["NodeID"], [])),
            }
        )
    return rows


def format_status(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        labels = ", ".join(f"{key}={value:g}" for key, value in sorted(row["labels"].items())) or "no labels"
        state = "alive" if row["alive"] else "dead"
        lines.append(f"{row['node_id'][:12]}  {row['address']}  {state}  cpus={row['cpus']:g}  {labels}")
        lines.extend(f"    running {name}" for name in row["attempts"])
    return "\n".join(lines) if lines else "no nodes"
