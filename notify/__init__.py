"""Notifications: what the user hears about a run, on which channels, and answers that come back.

- :mod:`notify.messages` — a :class:`~protocol.notify.Notice` rendered per channel;
- :mod:`notify.channels` — Telegram, Discord, JSON webhooks, Apprise URLs, the console;
- :mod:`notify.sender` — a queue, thread, rate limit and retries per channel;
- :mod:`notify.telegram_poll` — escalation answers from Telegram buttons;
- :mod:`notify.setup` — from the ``[notify]`` config to channels.

The actor that runs them is :class:`actors.notifier.NotifierActor`.  Depends on
``protocol`` and ``session``; nothing here starts a thread or reads a file at import.
"""

from notify.setup import NotifySetup
from protocol.notify import Notice

__all__ = ["Notice", "NotifySetup"]
