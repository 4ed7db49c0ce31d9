"""``executor keys``: add, list and remove the API keys kept in the encrypted key store.

A key is never taken as a command-line argument (it would land in the shell's
history and in ``ps``): ``add`` reads it from an environment variable, from
standard input, or from a hidden prompt.  Nothing here prints a key: only its
id, provider, tier and last 4 characters.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated

import msgspec
import typer
from rich.console import Console
from rich.markup import escape

from cli.options import command_group
from cli.options import fail as _fail

if TYPE_CHECKING:
    from session.keystore import KeyStore

__all__ = ["keys_app"]

keys_app = command_group(
    name="keys",
    help=(
        "Manage API keys added at run time, stored encrypted in <user config folder>/keys.enc.\n\n"
        "The master secret comes from TEAM_EXECUTOR_MASTER_KEY (a passphrase or a Fernet key), else the OS "
        "keyring; with neither, keys live in memory only and are not saved.\n\n"
        "Example: executor keys add openai --from-env OPENAI_API_KEY"
    ),
)

_MAX_STDIN_CHARS = 64 * 1024


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _warn(message: str) -> None:
    _err().print(f"[yellow]warning:[/] {escape(message)}")


def _open_store() -> KeyStore:
    from session.keystore import KeyStore, KeyStoreError  # noqa: PLC0415 - keeps `executor --help` fast

    try:
        return KeyStore.open()
    except KeyStoreError as error:
        raise _fail(str(error), 1) from None


def _read_key(from_env: str | None, stdin: bool) -> str:
    if from_env is not None and stdin:
        raise _fail("give either --from-env VAR or --stdin, not both", 2)
    if from_env is not None:
        value = os.environ.get(from_env, "")
        if not value.strip():
            raise _fail(f"the environment variable {from_env} is not set (or is empty)", 2)
        return value
    if stdin:
        value = sys.stdin.read(_MAX_STDIN_CHARS + 1)
        if len(value) > _MAX_STDIN_CHARS:
            raise _fail("standard input is too long for an API key; pipe just the key", 2)
        if not value.strip():
            raise _fail(
                "nothing on standard input; pipe the key in, e.g. `pass show openai | executor keys add ...`", 2
            )
        return value
    if sys.stdin.isatty():
        return str(typer.prompt("API key (input hidden)", hide_input=True, err=True))
    raise _fail(
        "say where the key comes from: --from-env VAR or --stdin (never as an argument: it would be "
        "kept in your shell history and shown by ps)",
        2,
    )


@keys_app.command("add")
def add(
    provider: Annotated[str, typer.Argument(help="Whose key it is: anthropic, openai, google, openai-compatible, ...")],
    tier: Annotated[
        str | None, typer.Option("--tier", "-t", help="The key's tier: FREE, STANDARD, PREMIUM or CRITICAL.")
    ] = None,
    from_env: Annotated[
        str | None, typer.Option("--from-env", help="Read the key from this environment variable.", show_default=False)
    ] = None,
    stdin: Annotated[bool, typer.Option("--stdin", help="Read the key from standard input.")] = False,
    extra: Annotated[list[str] | None, typer.Argument(hidden=True, show_default=False)] = None,
) -> None:
    """Store a key for PROVIDER, encrypted; prints its id and last 4 characters, never the key.

    The key is read from --from-env VAR, from --stdin, or from a hidden prompt on a terminal;
    never pass it as an argument. Adding a key again updates its tier and re-enables it.
    Example: executor keys add anthropic --tier PREMIUM --from-env ANTHROPIC_API_KEY
    """
    from session.config_fields import PROVIDERS  # noqa: PLC0415
    from session.keystore import InvalidKey, KeyStoreError  # noqa: PLC0415
    from session.secret import Secret  # noqa: PLC0415

    if extra:  # most likely the key itself: refuse it without echoing it back
        raise _fail(
            "executor keys add takes one argument, the provider; never pass the key as an argument "
            "(it stays in your shell history and shows in ps): use --from-env VAR or --stdin",
            2,
        )
    value = _read_key(from_env, stdin)
    store = _open_store()
    try:
        ident = store.add(provider, value, tier)
    except InvalidKey as error:
        raise _fail(str(error), 2) from None
    except KeyStoreError as error:
        raise _fail(str(error), 1) from None
    provider = provider.strip()
    shown = repr(Secret(provider, value.strip()))
    tier_text = f", tier {tier.strip().upper()}" if tier else ""
    if store.persistent:
        _out().print(f"added {ident} ({escape(shown)}{tier_text}) to {escape(str(store.path))}")
    else:
        _out().print(f"added {ident} ({escape(shown)}{tier_text}) in memory only")
        _warn(store.warning or "the key was not saved")
    if provider not in PROVIDERS:
        _warn(f"no model of the registry uses provider {provider!r} by default (known: {', '.join(PROVIDERS)})")


@keys_app.command("list")
def list_keys(
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")] = False,
) -> None:
    """List the stored keys: id, provider, tier and last 4 characters (never a key).

    Keys from environment variables ([keys.env]) are not stored and not listed here.
    Example: executor keys list --json
    """
    store = _open_store()
    from session.keystore import KeyStoreError  # noqa: PLC0415

    try:
        keys = store.list()
    except KeyStoreError as error:
        raise _fail(str(error), 1) from None
    if json:
        body = {
            "store": str(store.path),
            "master": store.source,
            "persistent": store.persistent,
            "warning": store.warning,
            "keys": [key._asdict() for key in keys],
        }
        sys.stdout.write(msgspec.json.encode(body).decode() + "\n")
        return
    console = _out()
    if not keys:
        console.print(f"no stored keys ({escape(str(store.path))})")
    else:
        from rich.table import Table  # noqa: PLC0415

        table = Table("id", "provider", "tier", "last 4", box=None, pad_edge=False)
        for key in keys:
            table.add_row(key.key_id, key.provider, key.tier or "-", f"…{key.last4}" if key.last4 else "…")
        console.print(table)
    if store.warning:
        _warn(store.warning)


@keys_app.command("remove")
def remove(key_id: Annotated[str, typer.Argument(help="The key's id, as `executor keys list` shows it.")]) -> None:
    """Remove a stored key by its id.

    Example: executor keys remove openai-3f9a1c2b7d4e
    """
    from session.keystore import KeyStoreError  # noqa: PLC0415

    store = _open_store()
    try:
        found = store.remove(key_id.strip())
    except KeyStoreError as error:
        raise _fail(str(error), 1) from None
    if not found:
        raise _fail(f"no stored key has the id {key_id!r}; see `executor keys list`", 1)
    _out().print(f"removed {escape(key_id.strip())}")
