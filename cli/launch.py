"""The ``executor`` console script: the collector is paused before anything else is imported.

Kept free of imports but :mod:`session.collector` (itself only ``gc`` and ``threading``): what
this module imports at its top is imported with the collector still on.
"""

from __future__ import annotations

from session import collector


def main() -> None:
    collector.pause()  # a long command resumes it once started (actors.run); see session.collector
    from cli.main import main as run_command  # noqa: PLC0415 - after the pause: the imports are its point

    run_command()
