"""The fleet registry: which agents (people, IDE agents) exist and what they can do.

``<session>/agents.yaml``::

    agents:
      - name: alice
        capabilities: [python, security]
      - name: cursor-1
        capabilities: [frontend]

An agent that is not listed, or lists no capabilities, may take any task; a
listed agent takes only tasks whose ``capabilities`` (``executor task prep
--needs``) it covers.  A file that cannot be read is reported, not guessed at.
"""

from __future__ import annotations

from pathlib import Path

import yaml

__all__ = ["AGENTS_FILE", "AgentsFileError", "capabilities_of", "load_agents"]

AGENTS_FILE = "agents.yaml"


class AgentsFileError(ValueError):
    """agents.yaml is not what it should be; the message names the file, the entry and the fix."""


def load_agents(folder: Path) -> dict[str, set[str]]:
    """Agent name -> its capabilities ({} when there is no agents.yaml)."""
    path = Path(folder) / AGENTS_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as error:
        raise AgentsFileError(f"{path}: cannot be read as YAML ({error}); fix or remove it") from None
    entries = (data or {}).get("agents", []) if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise AgentsFileError(f"{path}: expected `agents:` with a list of {{name, capabilities}} entries")
    agents: dict[str, set[str]] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
            raise AgentsFileError(f"{path}: agents[{index}] needs a `name:` (a string)")
        capabilities = entry.get("capabilities") or []
        if not isinstance(capabilities, list) or not all(isinstance(item, str) for item in capabilities):
            raise AgentsFileError(f"{path}: agents[{index}].capabilities must be a list of strings")
        agents[entry["name"].strip()] = {item.strip() for item in capabilities if item.strip()}
    return agents


def capabilities_of(folder: Path, agent: str) -> set[str] | None:
    """What ``agent`` declared, or None (not listed, or no capabilities: it may take anything)."""
    declared = load_agents(folder).get(agent)
    return declared or None
