"""Answers to escalations from Telegram: long polling ``getUpdates`` for button presses.

An escalation's message carries one button per option (callback_data
``esc:ESC-001:approve``).  The poller asks the Bot API for ``callback_query``
updates (``getUpdates`` with ``offset``, so each press is read once), checks that
the press came from a chat listed in ``chat_ids``, hands ``(escalation_id, choice,
who)`` to ``on_answer``, and answers the callback query (``answerCallbackQuery``)
so the user's app stops spinning and shows the result.

The loop runs on its own thread with an asyncio event loop: :meth:`TelegramPoller.stop`
cancels a long poll at once instead of waiting out its timeout.  Errors never end
it, except a refused token (401/404), which no retry can fix.  A 409 means
another program reads this bot's updates (a webhook, or a second poller).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Collection
from typing import Any

import httpx

from notify.messages import parse_callback_data
from session.loopback import is_loopback_url
from session.redaction import protect_library_logs, redact, register_secret
from session.retry_after import parse_retry_after
from session.secret import Secret

__all__ = ["AnswerCallback", "TelegramPoller", "who_pressed"]

log = logging.getLogger("executor.notify.telegram")

#: ``on_answer(escalation_id, choice, who)`` -> the text the presser sees (``None``:
#: "Recorded: <choice>").  It runs on the poller's thread: keep it short (a ``tell``,
#: or an ``ask`` with a timeout).  If it raises, the presser is told to answer another way.
AnswerCallback = Callable[[str, str, str], str | None]

_MAX_TOAST_CHARS = 200  # answerCallbackQuery's text limit
_MAX_BACKOFF_S = 60.0
_CONFLICT_WAIT_S = 30.0


def who_pressed(sender: Any) -> str:
    """``telegram:@alice (42)``, or ``telegram:Alice (42)`` for a user without a username."""
    if not isinstance(sender, dict):
        return "telegram:unknown"
    ident = sender.get("id")
    username = sender.get("username")
    label = f"@{username}" if isinstance(username, str) and username else str(sender.get("first_name") or "user")
    return f"telegram:{label} ({ident})" if ident is not None else f"telegram:{label}"


class TelegramPoller:
    """Polls one bot for button presses until :meth:`stop`."""

    def __init__(
        self,
        token: Secret,
        chat_ids: Collection[int | str],
        on_answer: AnswerCallback,
        *,
        api_base: str = "https://api.telegram.org",
        poll_timeout_s: int = 25,
        timeout_s: float = 10.0,
        retry_backoff_s: float = 2.0,
    ) -> None:
        protect_library_logs()
        register_secret(token.reveal())
        self._token = token
        self._numbers = {chat for chat in chat_ids if isinstance(chat, int)}
        self._usernames = {chat.lower() for chat in chat_ids if isinstance(chat, str)}
        self._on_answer = on_answer
        self._api_base = api_base.rstrip("/")
        self._poll_timeout_s = poll_timeout_s
        self._timeout_s = timeout_s
        self._backoff_s = retry_backoff_s
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = threading.Event()
        self._stopping = False
        self._lock = threading.Lock()
        self.answers = 0
        """Presses handed to ``on_answer`` so far."""
        self.ignored = 0
        """Presses refused (a chat not in ``chat_ids``, a button that is not an escalation's)."""

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._thread_main, name="notify-telegram-poll", daemon=True)
        self._thread.start()
        self._ready.wait(5.0)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Cancel the poll in flight and wait for the thread (at most ``timeout_s``)."""
        with self._lock:
            self._stopping = True
            loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(timeout_s)

    # --- the poller's thread ------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:
            log.exception("telegram: the answer poller failed")
        finally:
            self._ready.set()

    async def _main(self) -> None:
        with self._lock:
            if self._stopping:
                return
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
        self._ready.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._poll_forever()

    def _url(self, method: str) -> str:
        return f"{self._api_base}/bot{self._token.reveal()}/{method}"

    async def _poll_forever(self) -> None:
        timeout = httpx.Timeout(self._timeout_s, read=self._poll_timeout_s + self._timeout_s)
        trust_env = not is_loopback_url(self._api_base)  # proxies from the environment, never for a local server
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=trust_env) as client:
            offset: int | None = None
            failures = 0
            while True:
                body: dict[str, Any] = {"timeout": self._poll_timeout_s, "allowed_updates": ["callback_query"]}
                if offset is not None:
                    body["offset"] = offset
                try:
                    response = await client.post(self._url("getUpdates"), json=body)
                except httpx.HTTPError as error:
                    failures += 1
                    delay = min(_MAX_BACKOFF_S, self._backoff_s * 2 ** min(failures - 1, 10))
                    log.warning("telegram: getUpdates failed (%s); again in %.0fs", redact(str(error)) or error, delay)
                    await asyncio.sleep(delay)
                    continue
                updates, delay = self._read_updates(response, failures)
                if updates is None:
                    if delay is None:
                        return  # the token is refused: stop polling
                    failures += 1
                    await asyncio.sleep(delay)
                    continue
                failures = 0
                for update in updates:
                    if isinstance(update, dict) and isinstance(update.get("update_id"), int):
                        offset = update["update_id"] + 1  # confirms this update on the next call
                        await self._handle(client, update)

    def _read_updates(self, response: httpx.Response, failures: int) -> tuple[list[Any] | None, float | None]:
        """``(updates, None)``, or ``(None, seconds to wait)`` after an error, or ``(None, None)`` to stop."""
        try:
            data = response.json()
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        if response.is_success and data.get("ok") is True and isinstance(data.get("result"), list):
            return data["result"], None
        description = redact(str(data.get("description") or ""))
        status = response.status_code
        if status in (401, 404):
            log.error("telegram: the bot token is refused (%d %s); answers by button are off", status, description)
            return None, None
        if status == 409:
            log.warning(
                "telegram: another program reads this bot's updates (%s); delete its webhook or stop it, "
                "or set poll_answers = false under [notify.telegram]",
                description,
            )
            return None, _CONFLICT_WAIT_S
        parameters = data.get("parameters")
        retry_after = parameters.get("retry_after") if isinstance(parameters, dict) else None
        if isinstance(retry_after, int | float) and not isinstance(retry_after, bool):
            return None, float(retry_after)
        header = parse_retry_after(response.headers.get("Retry-After"))
        delay = header if header is not None else min(_MAX_BACKOFF_S, self._backoff_s * 2 ** min(failures, 10))
        log.warning("telegram: getUpdates answered %d %s; again in %.0fs", status, description, delay)
        return None, delay

    def _allowed(self, chat: Any) -> bool:
        if not isinstance(chat, dict):
            return False
        ident, username = chat.get("id"), chat.get("username")
        return (isinstance(ident, int) and ident in self._numbers) or (
            isinstance(username, str) and f"@{username}".lower() in self._usernames
        )

    async def _handle(self, client: httpx.AsyncClient, update: dict[str, Any]) -> None:
        query = update.get("callback_query")
        if not isinstance(query, dict) or not isinstance(query.get("id"), str):
            return
        message = query.get("message")
        chat = message.get("chat") if isinstance(message, dict) else None
        if not self._allowed(chat):
            self.ignored += 1
            chat_id = chat.get("id") if isinstance(chat, dict) else None
            log.warning("telegram: ignored a button press from chat %s, which is not in chat_ids", chat_id)
            await self._answer_query(client, query["id"], "This chat may not answer.")
            return
        parsed = parse_callback_data(query.get("data"))
        if parsed is None:
            self.ignored += 1
            await self._answer_query(client, query["id"], "Unknown button.")
            return
        escalation_id, choice = parsed
        who = who_pressed(query.get("from"))
        try:
            reply = self._on_answer(escalation_id, choice, who)
        except Exception:
            log.exception("telegram: recording the answer %s to %s failed", choice, escalation_id)
            reply = "Could not record the answer: use the command in the message."
        else:
            self.answers += 1
            log.info("telegram: %s answered %s with %s", who, escalation_id, choice)
        await self._answer_query(client, query["id"], reply or f"Recorded: {choice}")

    async def _answer_query(self, client: httpx.AsyncClient, query_id: str, text: str) -> None:
        try:
            response = await client.post(
                self._url("answerCallbackQuery"), json={"callback_query_id": query_id, "text": text[:_MAX_TOAST_CHARS]}
            )
        except httpx.HTTPError as error:
            log.warning("telegram: answerCallbackQuery failed: %s", redact(str(error)) or type(error).__name__)
            return
        if not response.is_success:
            log.warning("telegram: answerCallbackQuery answered %d", response.status_code)
