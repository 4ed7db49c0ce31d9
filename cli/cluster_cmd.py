"""``executor cluster status``: the Ray cluster's nodes, their labels and the attempts on them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated

import typer

from cli.options import JsonOpt, command_group, stdout_console
from cli.options import fail as _fail
from cluster.connect import ClusterUnavailable, namespace_of
from cluster.status import cluster_status, format_status
from session.problems import format_problems

__all__ = ["cluster_app"]

cluster_app = command_group(
    name="cluster",
    help=(
        "The Ray cluster attempts run on (executor run --cluster ADDRESS).\n\n"
        "Example: executor cluster status --cluster 127.0.0.1:6379"
    ),
)

AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--cluster", metavar="ADDRESS", help="auto, ray://host:10001 or host:port (default: [cluster].address)."
    ),
]
SessionOpt = Annotated[
    Path | None, typer.Option("--session", "-s", help="A session whose executor.toml names the cluster.")
]


@cluster_app.command()
def status(cluster: AddressOpt = None, session: SessionOpt = None, as_json: JsonOpt = False) -> None:
    """List the cluster's nodes, their labels (custom resources) and the attempts running on each."""
    address = cluster
    marker = "status"
    if session is not None:
        from backends.registry import backend_names  # noqa: PLC0415
        from session.config import ConfigInvalid, load_config  # noqa: PLC0415 - keeps `executor --help` fast

        try:
            config = load_config(session, known_backends=backend_names())
        except ConfigInvalid as error:
            raise _fail(f"the configuration is not valid:\n{format_problems(error.problems)}", 2) from None
        address = address or config.cluster.address
        marker = hashlib.sha256(str(session.resolve()).encode()).hexdigest()[:20]
    if not address:
        raise _fail("no cluster named: give --cluster ADDRESS or a --session whose [cluster].address is set", 2)
    try:
        rows = cluster_status(address, namespace_of(marker))
    except ClusterUnavailable as error:
        raise _fail(str(error), 2) from None
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
    else:
        stdout_console().print(format_status(rows), markup=False)
