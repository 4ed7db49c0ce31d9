"""Keeping channel secrets out of logs and error texts.

A Telegram bot token and a Discord webhook token sit in the *path* of the URLs
the channels call, and the HTTP libraries log those URLs (httpx logs every
request at INFO; Apprise logs URLs at DEBUG).  Every secret a channel uses is
registered here; :func:`scrub` masks registered values in any text, and
:func:`protect_library_logs` puts a filter on the libraries' loggers that does
the same to their records (and drops Apprise's chatter below WARNING, which
prints pieces of URLs that are not whole registered values).
"""

from __future__ import annotations

import logging
import threading

from session.config_models import mask_tail

__all__ = ["protect_library_logs", "register_secret", "scrub"]

#: Shorter values are not registered: masking every "abc" in every log line would
#: garble logs, and no token or webhook secret is that short.
_MIN_SECRET_LEN = 8
#: A logger's filters see only the records logged on it, not on its children: name each one.
_LIBRARY_LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "apprise",
)

_lock = threading.Lock()
_secrets: set[str] = set()
_protected: set[str] = set()


def register_secret(*values: str) -> None:
    """Mask ``values`` in everything :func:`scrub` and the library log filter see from now on."""
    with _lock:
        _secrets.update(value for value in values if len(value) >= _MIN_SECRET_LEN)


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``…`` and its last 4 characters."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)  # a longer secret may contain a shorter one
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, mask_tail(secret))
    return text


class _ScrubFilter(logging.Filter):
    def __init__(self, min_level: int) -> None:
        super().__init__()
        self.min_level = min_level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level:
            return False
        message = record.getMessage()
        scrubbed = scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


def protect_library_logs() -> None:
    """Filter the loggers of httpx, httpcore and Apprise (once per process; later calls do nothing)."""
    with _lock:
        todo = [name for name in _LIBRARY_LOGGERS if name not in _protected]
        _protected.update(todo)
    for name in todo:
        min_level = logging.WARNING if name == "apprise" else logging.NOTSET
        logging.getLogger(name).addFilter(_ScrubFilter(min_level))
