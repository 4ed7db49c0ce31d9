"""``python -P -m cli.bridge_process``: the bridge process a run with ``--http`` starts (see
:mod:`bridge.remote`).  It lives here, at the top, because it serves web/'s dashboard."""

from __future__ import annotations

import sys

from bridge.remote import main
from web.app import WebApp

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], dashboard=WebApp))
