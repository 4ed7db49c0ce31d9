"""``executor cluster status``: the nodes, their labels (custom resources) and running attempts."""

from __future__ import annotations

from typing import Any

from cluster.connect import connect

__all__ = ["cluster_status", "format_status"]

_STANDARD = {"CPU", "GPU", "memory", "object_store_memory"}


def cluster_status(address: str, namespace: str) -> list[dict[str, Any]]:
    """One dict per node: id, address, alive, labels, the attempt actors on it."""
    ray = connect(address, namespace)
    attempts: dict[str, list[str]] = {}
    # Attempt actors are named (in their session's namespace): each says where it runs.
    # (Ray's state API would need its dashboard, which a minimal install lacks.)
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name, space = entry["name"], entry["namespace"]
        if not name.startswith("attempt:"):
            continue
        try:
            node_id, _host = ray.get(ray.get_actor(name, namespace=space).where.remote(), timeout=10)
        except Exception:  # noqa: BLE001, S112 - an attempt ending meanwhile is simply not listed
            continue
        attempts.setdefault(node_id, []).append(name)
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
