"""The channels a notice goes out on: one class per service, each with ``send(notice) -> SendResult``.

``send`` makes one attempt and never raises: it says whether the notice got
through, whether to try again (and after how long, when the service said so in a
429), or that retrying is pointless (a bad token, a chat that does not exist).
Retries, rate limits and queues belong to the caller (:mod:`notify.sender`).

Telegram, Discord and generic webhooks are thin synchronous httpx clients whose
base URL is configurable (a self-hosted Bot API server; loopback fakes in tests).
Apprise covers every other service by URL; it cannot be pointed at another
Telegram or Discord host (their API hosts are constants in its plugins), which is
why those two are ours.  Each channel is used by one sender thread.

No secret leaves a channel: URLs that carry tokens are registered with
:mod:`session.redaction`, error texts are scrubbed, and ``repr`` shows only the
redacted ``target``.
"""

from __future__ import annotations

import sys
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TextIO
from urllib.parse import urlsplit

from notify.messages import discord_text, plain_text, telegram_html, telegram_keyboard, webhook_payload
from protocol.notify import Notice
from session.loopback import is_loopback_url
from session.redaction import protect_library_logs, redact, register_secret
from session.retry_after import parse_retry_after
from session.secret import Secret

if TYPE_CHECKING:
    import httpx

__all__ = [
    "AppriseChannel",
    "Channel",
    "ConsoleChannel",
    "DiscordChannel",
    "SendResult",
    "TelegramChannel",
    "WebhookChannel",
    "telegram_result",
]

_MAX_ERROR_CHARS = 300
_CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SendResult:
    """The outcome of one attempt.

    ``ok``: delivered.  Otherwise ``error`` says why (no secrets), and either
    ``permanent`` (do not retry: the service refused this for good) or a retry is
    worth it, after ``retry_after_s`` when the service named a wait (a 429).
    """

    ok: bool
    error: str | None = None
    retry_after_s: float | None = None
    permanent: bool = False

    @classmethod
    def sent(cls) -> SendResult:
        return cls(ok=True)

    @classmethod
    def retry(cls, error: str, retry_after_s: float | None = None) -> SendResult:
        return cls(ok=False, error=_clean(error), retry_after_s=retry_after_s)

    @classmethod
    def refused(cls, error: str) -> SendResult:
        return cls(ok=False, error=_clean(error), permanent=True)


def _clean(error: str) -> str:
    return redact(error)[:_MAX_ERROR_CHARS]


def _shown_host(url: str) -> str:
    """``scheme://host[:port]``: what may be shown of a URL whose path or user info is secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


class Channel(ABC):
    """One destination.  ``name`` identifies it in counters and in ``on_dropped``;
    ``target`` says where it sends, with nothing secret in it."""

    kind: ClassVar[str]

    def __init__(self, name: str, target: str, rate_per_minute: int | None) -> None:
        self.name = name
        self.target = target
        self.rate_per_minute = rate_per_minute

    @abstractmethod
    def send(self, notice: Notice) -> SendResult:
        """One attempt to deliver ``notice``; never raises."""

    def close(self) -> None:  # noqa: B027 - most channels hold nothing to release
        """Release connections (the channel is not used afterwards)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} → {self.target}>"


class _HttpChannel(Channel):
    """A channel that POSTs JSON with its own httpx client (one per channel: its sender thread's)."""

    def __init__(
        self,
        name: str,
        target: str,
        rate_per_minute: int | None,
        base_url: str,
        timeout_s: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(name, target, rate_per_minute)
        # httpx (~0.1 s to import) loads with the first HTTP channel: most runs have only the console.
        import httpx  # noqa: PLC0415

        protect_library_logs()
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, _CONNECT_TIMEOUT_S)),
            trust_env=not is_loopback_url(base_url),  # proxies from the environment, never for a local server
            follow_redirects=False,
            transport=transport,
        )

    def _post(self, url: str, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> httpx.Response:
        return self._client.post(url, json=body, headers=headers)

    def close(self) -> None:
        self._client.close()


def _transport_error(error: httpx.HTTPError) -> SendResult:
    # str(error) of a transport error is the OS's words ("[Errno 111] Connection refused"), never the URL.
    return SendResult.retry(f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)


def _by_status(service: str, response: httpx.Response, detail: str, retry_after_s: float | None) -> SendResult:
    """The common reading of a refusal: 429 and 408 and 5xx are worth another try; any other 4xx is not."""
    status = response.status_code
    error = f"{service} answered {status}" + (f": {detail}" if detail else "")
    if status == 429:
        return SendResult.retry(error, retry_after_s)
    if status in (408, 425) or status >= 500:
        return SendResult.retry(error, retry_after_s if status == 503 else None)
    return SendResult.refused(error)


# --------------------------------------------------------------------------- Telegram


class TelegramChannel(_HttpChannel):
    """``sendMessage`` to one chat, as HTML, with an inline keyboard for an escalation when ``buttons``.

    Give ``buttons=False`` when nobody polls for presses: a button nobody answers
    spins in the user's app and does nothing.
    """

    kind = "telegram"

    def __init__(
        self,
        token: Secret,
        chat_id: int | str,
        *,
        api_base: str = "https://api.telegram.org",
        buttons: bool = True,
        timeout_s: float = 10.0,
        rate_per_minute: int | None = 20,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        target = f"{_shown_host(api_base)} chat {chat_id}"
        super().__init__(f"telegram:{chat_id}", target, rate_per_minute, api_base, timeout_s, transport)
        register_secret(token.reveal())
        self._token = token
        self._chat_id = chat_id
        self._api_base = api_base.rstrip("/")
        self._buttons = buttons

    def send(self, notice: Notice) -> SendResult:
        body: dict[str, Any] = {
            "chat_id": self._chat_id,
            "text": telegram_html(notice),
            "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": True},
        }
        keyboard = telegram_keyboard(notice) if self._buttons else None
        if keyboard is not None:
            body["reply_markup"] = keyboard
        import httpx  # noqa: PLC0415 - loaded by __init__; see _HttpChannel

        try:
            response = self._post(f"{self._api_base}/bot{self._token.reveal()}/sendMessage", body)
        except httpx.HTTPError as error:
            return _transport_error(error)
        return telegram_result(response)


def telegram_result(response: httpx.Response) -> SendResult:
    """A Bot API answer read as a :class:`SendResult`: ``ok``, or ``error_code``, ``description``
    and ``parameters.retry_after`` (Telegram's wait after a 429, in the JSON body)."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        data = {}
    if response.is_success and data.get("ok") is True:
        return SendResult.sent()
    parameters = data.get("parameters")
    retry_after = parameters.get("retry_after") if isinstance(parameters, dict) else None
    wait = float(retry_after) if isinstance(retry_after, int | float) and not isinstance(retry_after, bool) else None
    if wait is None:
        wait = parse_retry_after(response.headers.get("Retry-After"))
    description = data.get("description")
    detail = description if isinstance(description, str) else ""
    if response.is_success:  # 200 without "ok": true is not Telegram speaking
        return SendResult.retry(f"telegram answered {response.status_code} without ok: {detail}")
    return _by_status("telegram", response, detail, wait)


# --------------------------------------------------------------------------- Discord


class DiscordChannel(_HttpChannel):
    """A message to a Discord channel webhook (``POST /api/webhooks/ID/TOKEN``; 204 on success).

    Mentions are off (``allowed_mentions``): an agent's text must not ping a server.
    A 429 says how long to wait in ``Retry-After`` (or the body's ``retry_after``).
    """

    kind = "discord"

    def __init__(
        self,
        webhook_url: Secret,
        *,
        name: str = "discord",
        timeout_s: float = 10.0,
        rate_per_minute: int | None = 30,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        url = webhook_url.reveal()
        super().__init__(name, f"{_shown_host(url)}/api/webhooks/…", rate_per_minute, url, timeout_s, transport)
        # The token is the path's last part; masking only the long parts keeps the host readable in logs.
        register_secret(*(part for part in urlsplit(url).path.split("/") if len(part) >= 16))
        self._url = webhook_url

    def send(self, notice: Notice) -> SendResult:
        body = {"content": discord_text(notice), "allowed_mentions": {"parse": []}}
        import httpx  # noqa: PLC0415 - loaded by __init__; see _HttpChannel

        try:
            response = self._post(self._url.reveal(), body)
        except httpx.HTTPError as error:
            return _transport_error(error)
        if response.is_success:
            return SendResult.sent()
        wait = parse_retry_after(response.headers.get("Retry-After"))
        detail = ""
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict):
            if wait is None and isinstance(data.get("retry_after"), int | float):
                wait = max(0.0, float(data["retry_after"]))
            if isinstance(data.get("message"), str):
                detail = data["message"]
        return _by_status("discord", response, detail, wait)


# --------------------------------------------------------------------------- generic JSON webhook


class WebhookChannel(_HttpChannel):
    """Each notice POSTed as JSON (:func:`notify.messages.webhook_payload`) to ``url``; any 2xx is success."""

    kind = "webhook"

    def __init__(
        self,
        url: Secret,
        *,
        name: str = "webhook",
        headers: Mapping[str, Secret] | None = None,
        timeout_s: float = 10.0,
        rate_per_minute: int | None = 60,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        value = url.reveal()
        parts = urlsplit(value)
        shown = _shown_host(value) + ("/…" if parts.path.strip("/") or parts.query else "")
        super().__init__(name, shown, rate_per_minute, value, timeout_s, transport)
        register_secret(value, *(header.reveal() for header in (headers or {}).values()))
        self._url = url
        self._headers = dict(headers or {})

    def send(self, notice: Notice) -> SendResult:
        headers = {name: value.reveal() for name, value in self._headers.items()}
        import httpx  # noqa: PLC0415 - loaded by __init__; see _HttpChannel

        try:
            response = self._post(self._url.reveal(), webhook_payload(notice), headers)
        except httpx.HTTPError as error:
            return _transport_error(error)
        if response.is_success:
            return SendResult.sent()
        return _by_status("webhook", response, "", parse_retry_after(response.headers.get("Retry-After")))


# --------------------------------------------------------------------------- Apprise


_apprise_lock = threading.Lock()


def _import_apprise() -> Any:
    """Import Apprise (slow: a few hundred ms) only when an Apprise URL is configured."""
    with _apprise_lock, warnings.catch_warnings():
        # Apprise's e-mail plugin imports imghdr, deprecated in Python 3.11-3.12; importing it
        # here first, with that warning silenced, keeps it from turning into an error elsewhere.
        warnings.simplefilter("ignore", DeprecationWarning)
        if sys.version_info < (3, 13):
            import imghdr  # noqa: F401, PLC0415

        import apprise  # noqa: PLC0415

        return apprise


class AppriseChannel(Channel):
    """One Apprise URL (``json://``, ``slack://``, ``ntfy://``, ``mailto://``, ...).

    Apprise reports success or failure only (no status, no Retry-After): a failure
    is retried with the caller's backoff.  A URL Apprise does not understand is a
    permanent failure found when the channel is built (:class:`ValueError`).
    """

    kind = "apprise"

    def __init__(self, url: Secret, *, name: str = "apprise", rate_per_minute: int | None = 30) -> None:
        value = url.reveal()
        scheme = value.partition("://")[0] or "?"
        super().__init__(name, f"{scheme}://…", rate_per_minute)
        protect_library_logs()
        register_secret(value)
        apprise = _import_apprise()
        self._apprise = apprise.Apprise()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            added = self._apprise.add(value)
        if not added:
            raise ValueError(f"{name}: Apprise does not understand the URL {scheme}://… (see its list of services)")

    def send(self, notice: Notice) -> SendResult:
        try:
            body = plain_text(notice).partition("\n")[2]  # the title goes apart, without its mark
            result = self._apprise.notify(title=notice.title, body=body or notice.title)
        except Exception as error:  # noqa: BLE001 - a plugin's bug must not end the sender thread
            return SendResult.retry(f"apprise raised {type(error).__name__}")
        if result:
            return SendResult.sent()
        status = getattr(getattr(result, "status", None), "name", "FAILURE")
        return SendResult.retry(f"apprise could not deliver ({status.lower()})")


# --------------------------------------------------------------------------- console


class ConsoleChannel(Channel):
    """The notice as plain text on ``stream`` (default: standard error, read at each send)."""

    kind = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__("console", "stderr" if stream is None else getattr(stream, "name", "stream"), None)
        self._stream = stream

    def send(self, notice: Notice) -> SendResult:
        stream = self._stream if self._stream is not None else sys.stderr
        text = plain_text(notice)
        try:
            stream.write("\n".join(f"[notify] {line}" for line in text.splitlines()) + "\n")
            stream.flush()
        except (OSError, ValueError) as error:  # a closed terminal, a closed file
            return SendResult.refused(f"cannot write: {error}")
        return SendResult.sent()
