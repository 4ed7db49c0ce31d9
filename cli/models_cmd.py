"""``executor models``: the model registry, its tiers, the fallback chain, and live key states.

The registry and chain come from the effective configuration (the same files
``executor config check`` reads).  Key states come from a key pool running in
this process, when one is wired in with :func:`set_key_state_source`; without
one the command says so.  Keys are never shown: a row names a key by the id the
key pool gives it (provider + last 4 characters).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import msgspec
import typer
from rich.console import Console, JustifyMethod
from rich.markup import escape
from rich.table import Table

from cli.options import ConfigOpt, JsonOpt, SessionOpt, load_config_args
from cli.render import render_problems
from protocol.routing import ModelInfo
from session.problems import Problem

if TYPE_CHECKING:  # the config models load with the command that reads a config, not with `executor --help`
    from session.config_models import Config

__all__ = [
    "NO_KEY_POOL",
    "KeyStateRow",
    "KeyStateSource",
    "ModelsReport",
    "TierLink",
    "models",
    "models_report",
    "recorded_key_states",
    "render_models",
    "set_key_state_source",
]

NO_KEY_POOL = "no key pool in this process"


class KeyStateRow(msgspec.Struct, frozen=True, kw_only=True):
    """One key of the key pool as ``executor models`` shows it."""

    provider: str
    key_id: str
    """How the key is named: never the key, e.g. ``anthropic…3f9a``."""
    status: str
    """``ready``, ``cooling``, ``disabled``, ... as the key pool says."""
    cooling_for_s: float | None = None
    """Seconds until a cooling key is usable again."""
    requests: int = 0
    cost_usd: float = 0.0
    last_error: str | None = None


class KeyStateSource(Protocol):
    """Something that reports the key pool's keys for ``config``, or ``None`` when there is no pool."""

    def __call__(self, config: Config) -> Sequence[KeyStateRow] | None: ...


_key_state_source: KeyStateSource | None = None


def set_key_state_source(source: KeyStateSource | None) -> None:
    """Wire (or, with ``None``, unwire) where ``executor models`` reads live key states."""
    global _key_state_source  # noqa: PLW0603 - one process-wide hook, set once at start-up
    _key_state_source = source


class TierLink(msgspec.Struct, frozen=True, kw_only=True):
    """One tier of the fallback chain and its models, in registry order."""

    tier: str
    models: tuple[str, ...]


class ModelsReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ``executor models --json`` prints."""

    valid: bool
    models: tuple[ModelInfo, ...] = ()
    """The registry, in registry order."""
    fallback: tuple[str, ...] = ()
    chain: tuple[TierLink, ...] = ()
    """The fallback chain from its first tier, each tier with its models."""
    outside_chain: tuple[str, ...] = ()
    """Models whose tier the fallback chain does not name: used only when named or asked for."""
    critical_needs_approval: bool = True
    network_retries: int = 3
    fallback_backend: str | None = None
    keys: tuple[KeyStateRow, ...] | None = None
    """Live key states; ``None`` when no key pool runs in this process."""
    keys_note: str | None = None
    sources: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()


def models_report(config: Config, key_states: Sequence[KeyStateRow] | None = None) -> ModelsReport:
    """The report of ``config``'s registry and chain, with ``key_states`` when given."""
    from session.routing_chain import registry_of  # noqa: PLC0415 - see TYPE_CHECKING above

    registry = registry_of(config)
    tiers = registry.fallback
    chain = tuple(
        TierLink(tier=tier, models=tuple(model.name for model in config.models_in_tier(tier))) for tier in tiers
    )
    return ModelsReport(
        valid=True,
        models=registry.models,
        fallback=registry.fallback,
        chain=chain,
        outside_chain=tuple(model.name for model in config.models if model.tier not in tiers),
        critical_needs_approval=registry.critical_needs_approval,
        network_retries=registry.network_retries,
        fallback_backend=registry.fallback_backend,
        keys=None if key_states is None else tuple(key_states),
        keys_note=NO_KEY_POOL if key_states is None else None,
        sources=tuple(config.sources),
        problems=tuple(config.warnings),
    )


def _price(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def render_models(console: Console, report: ModelsReport) -> None:
    """``report`` as tables: the registry (most capable tier first), the chain, the keys."""
    from session.config_fields import TIERS  # noqa: PLC0415 - see TYPE_CHECKING above

    table = Table(box=None, pad_edge=False, title="model registry (prices: USD per 1M tokens)", title_justify="left")
    # Wrap rather than cut: a model name or URL shown as "claude-…" is no use.
    for header in ("model", "tier", "provider", "backend", "in", "out", "cached", "context", "base_url"):
        justify: JustifyMethod = "right" if header in {"in", "out", "cached", "context"} else "left"
        table.add_column(header, overflow="fold", justify=justify)
    rank = {tier: index for index, tier in enumerate(reversed(TIERS))}
    for model in sorted(report.models, key=lambda model: rank[model.tier]):
        table.add_row(
            escape(model.name),
            model.tier,
            model.provider,
            escape(model.backend),
            _price(model.input_per_mtok),
            _price(model.output_per_mtok),
            _price(model.cached_per_mtok),
            f"{model.context_window:,}",
            escape(model.base_url or "-"),
        )
    console.print(table)
    console.print()
    links = [f"{link.tier} ({', '.join(link.models) or 'no model'})" for link in report.chain]
    console.print(f"fallback chain: {escape(' -> '.join(links))}")
    if report.outside_chain:
        console.print(f"not in the chain (used only when named): {escape(', '.join(report.outside_chain))}")
    approval = "yes" if report.critical_needs_approval else "no"
    console.print(
        f"CRITICAL needs approval: {approval}    network retries before the next tier: {report.network_retries}"
    )
    if report.fallback_backend:
        console.print(f"when the chain is exhausted: hand the task to backend {escape(report.fallback_backend)}")
    console.print()
    if report.keys is None:
        console.print(f"keys: {report.keys_note or NO_KEY_POOL}")
        return
    if report.keys_note:
        console.print(f"keys: {escape(report.keys_note)}")
    keys = Table(box=None, pad_edge=False, title="keys", title_justify="left")
    for header in ("provider", "key", "status", "cooling for", "requests", "cost $", "last error"):
        keys.add_column(header, overflow="fold")
    for row in report.keys:
        keys.add_row(
            escape(row.provider),
            escape(row.key_id),
            escape(row.status),
            "-" if not row.cooling_for_s else f"{row.cooling_for_s:.1f}s",
            str(row.requests),
            f"{row.cost_usd:.4f}",
            escape(row.last_error or "-"),
        )
    if not report.keys:
        console.print("keys: the key pool holds no key")
    else:
        console.print(keys)


def recorded_key_states(encoded: str, now: float) -> list[KeyStateRow]:
    """The key states a run recorded in its ``key_states`` meta, as of ``now`` (wall clock)."""
    rows = []
    for item in msgspec.json.decode(encoded):
        until = item.get("cooling_until")
        remaining = max(0.0, until - now) if until else 0.0
        status = item.get("status", "")
        if status == "cooling" and remaining == 0.0:
            status = "active"  # its cooldown ended since the run wrote this
        rows.append(
            KeyStateRow(
                provider=item.get("provider", ""),
                key_id=item.get("key_id", ""),
                status=status,
                cooling_for_s=round(remaining, 1) or None,
                requests=item.get("requests", 0),
                cost_usd=item.get("cost_usd", 0.0),
                last_error=item.get("last_error"),
            )
        )
    return rows


def stored_key_states(session: Path) -> tuple[list[KeyStateRow] | None, str | None]:
    """The key states a run of ``session`` last recorded, and where they come from.

    A run writes them to its state database every few seconds when they change, so this
    works from another terminal while the run goes on (read-only, nothing is created).
    """
    from session.lock import read_holder  # noqa: PLC0415 - only with --session
    from session.store import StoreError, StoreReader  # noqa: PLC0415

    try:
        reader = StoreReader.open(session)
    except StoreError:
        return None, None
    if reader is None:
        return None, None
    try:
        meta = reader.meta()
    finally:
        reader.close()
    if "key_states" not in meta:
        return None, None
    rows = recorded_key_states(meta["key_states"], time.time())
    holder = read_holder(session)
    when = meta.get("key_states_at", "?")
    if holder is not None:
        note = f"live, from the run going on (pid {holder.pid}); recorded {when}"
    else:
        note = f"as the last run left them at {when}"
    return rows, note


def models(session: SessionOpt = None, config: ConfigOpt = None, json: JsonOpt = False) -> None:
    """Show the model registry (tiers, prices, context windows), the fallback chain, and live key states.

    The registry comes from the same files as `executor config check`; keys show as provider + last 4 only.
    Exit code 0, 1 when the configuration is invalid, 2 on bad arguments.
    Example: executor models --session work/login --json
    """
    loaded, problems = load_config_args(session, config)
    if loaded is None:
        if json:
            body = ModelsReport(valid=False, problems=tuple(problems))
            sys.stdout.write(msgspec.json.encode(body).decode() + "\n")
        else:
            render_problems(Console(highlight=False, soft_wrap=True), "configuration", problems)
        raise typer.Exit(1)
    key_states = _key_state_source(loaded) if _key_state_source is not None else None
    note = None
    if key_states is None and session is not None:
        key_states, note = stored_key_states(session)
    report = models_report(loaded, key_states)
    if note is not None:
        report = msgspec.structs.replace(report, keys_note=note)
    if json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        console = Console(highlight=False, soft_wrap=True)
        render_problems(console, "configuration", problems)
        render_models(console, report)
    raise typer.Exit(0)
