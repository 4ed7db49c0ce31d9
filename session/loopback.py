"""Whether a host or URL names this machine: the one loopback check for servers and clients.

Servers listen on loopback unless told otherwise and check the ``Host`` header against it;
clients skip environment proxies for a local server.  ``localhost`` and ``*.localhost``
(RFC 6761) count, as do 127.0.0.0/8 and ::1.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["is_loopback", "is_loopback_url"]


def is_loopback(host: str) -> bool:
    """``host`` (a name or an IP address, IPv6 with or without brackets) is this machine."""
    host = host.strip().lower().removeprefix("[").removesuffix("]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    """The host of ``url`` is this machine (a URL without a host is not)."""
    host = urlsplit(url).hostname
    return host is not None and is_loopback(host)
