"""Loopback stand-ins for the chat services the Notifier talks to, speaking their real wire protocols.

- :class:`FakeTelegram` — the Bot API: ``POST /bot<TOKEN>/sendMessage``, ``getUpdates``
  (long polling with ``offset``: an update is confirmed by a later call with a
  higher offset, as Telegram does) and ``answerCallbackQuery``.  A wrong token gets
  401.  ``sendMessage`` can be scripted to answer 429 with ``parameters.retry_after``
  or a 5xx; :meth:`FakeTelegram.press` queues a ``callback_query`` update.
- :class:`FakeDiscord` — a channel webhook: ``POST /api/webhooks/ID/TOKEN``, 204 on
  success, 429 with a ``Retry-After`` header (and the body's ``retry_after``), 404
  for an unknown webhook.
- :class:`FakeWebhook` — any POST recorded (path, headers, JSON body); 200, or scripted.

Every request is recorded with a ``time.monotonic()`` stamp, so tests can check order.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tests.loopback import LoopbackServer, StreamingHandler


@dataclass(frozen=True)
class Received:
    """One request a fake saw."""

    path: str
    body: Any
    headers: dict[str, str]
    at: float  # time.monotonic()
    status: int  # what the fake answered


@dataclass(frozen=True)
class Fail:
    """A scripted refusal: ``status`` with ``retry_after_s`` (429) or a plain error."""

    status: int = 500
    retry_after_s: float | None = None
    description: str = "Internal Server Error"


@dataclass
class _Script:
    failures: deque[Fail] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, fail: Fail, times: int) -> None:
        with self.lock:
            self.failures.extend([fail] * times)

    def next(self) -> Fail | None:
        with self.lock:
            return self.failures.popleft() if self.failures else None


class _JsonHandler(StreamingHandler):
    fake: Any

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            return raw.decode(errors="replace")

    def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        try:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            pass  # the client hung up (a cancelled long poll)


# --------------------------------------------------------------------------- Telegram


class _TelegramHandler(_JsonHandler):
    fake: FakeTelegram

    def do_POST(self) -> None:
        body = self._body()
        _, _, rest = self.path.partition("/bot")
        token, _, method = rest.partition("/")
        self.fake.arrived.append(method)  # a long poll is recorded in requests only when it returns
        status, answer = self.fake.handle(token, method, body if isinstance(body, dict) else {})
        self.fake.record(self.path, body, dict(self.headers), status)
        self._send_json(status, answer)


class FakeTelegram(LoopbackServer):
    """A Telegram Bot API server for one bot.  ``api_base`` is :attr:`url`."""

    handler = _TelegramHandler
    thread_name = "fake-telegram"

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.requests: list[Received] = []
        self.arrived: list[str] = []  # methods called, in order of arrival
        self.script = _Script()
        self._updates: list[dict[str, Any]] = []
        self._confirmed = 0  # updates with a lower id are gone
        self._changed = threading.Condition()
        self._ids = itertools.count(1)
        self._message_ids = itertools.count(100)

    # --- what tests call ----------------------------------------------------------------

    def fail_send(self, fail: Fail, times: int = 1) -> None:
        """The next ``times`` sendMessage calls get ``fail``."""
        self.script.add(fail, times)

    def press(
        self,
        data: str,
        *,
        chat_id: int,
        user_id: int = 42,
        username: str | None = "alice",
        first_name: str = "Alice",
    ) -> str:
        """Queue a button press (a ``callback_query`` update); returns its callback_query id."""
        query_id = f"cq-{next(self._ids)}"
        sender: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        if username:
            sender["username"] = username
        chat = {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"}
        with self._changed:
            update_id = 1000 + len(self._updates)
            self._updates.append(
                {
                    "update_id": update_id,
                    "callback_query": {
                        "id": query_id,
                        "from": sender,
                        "message": {"message_id": 7, "date": int(time.time()), "chat": chat, "text": "…"},
                        "chat_instance": "ci",
                        "data": data,
                    },
                }
            )
            self._changed.notify_all()
        return query_id

    def sent(self) -> list[dict[str, Any]]:
        """Bodies of the sendMessage calls that succeeded, in order."""
        return [r.body for r in self.calls("sendMessage") if r.status == 200]

    def calls(self, method: str) -> list[Received]:
        return [r for r in list(self.requests) if r.path.endswith(f"/{method}")]

    def answered(self) -> list[dict[str, Any]]:
        return [r.body for r in self.calls("answerCallbackQuery")]

    # --- the server's side ----------------------------------------------------------------

    def record(self, path: str, body: Any, headers: dict[str, str], status: int) -> None:
        self.requests.append(Received(path, body, headers, time.monotonic(), status))

    def handle(self, token: str, method: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if token != self.token:
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        if method == "sendMessage":
            return self._send_message(body)
        if method == "getUpdates":
            return 200, {"ok": True, "result": self._get_updates(body)}
        if method == "answerCallbackQuery":
            return 200, {"ok": True, "result": True}
        return 404, {"ok": False, "error_code": 404, "description": "Not Found: method not found"}

    def _send_message(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        fail = self.script.next()
        if fail is not None:
            answer: dict[str, Any] = {"ok": False, "error_code": fail.status, "description": fail.description}
            if fail.retry_after_s is not None:
                answer["parameters"] = {"retry_after": fail.retry_after_s}
            return fail.status, answer
        if not isinstance(body.get("chat_id"), int | str) or not isinstance(body.get("text"), str):
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"}
        message = {"message_id": next(self._message_ids), "date": int(time.time()), "chat": {"id": body["chat_id"]}}
        return 200, {"ok": True, "result": message}

    def _get_updates(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        offset = body.get("offset")
        wait = float(body.get("timeout") or 0)
        deadline = time.monotonic() + wait
        with self._changed:
            if isinstance(offset, int):
                self._confirmed = max(self._confirmed, offset)
            while True:
                pending = [u for u in self._updates if u["update_id"] >= self._confirmed]
                remaining = deadline - time.monotonic()
                if pending or remaining <= 0 or self._stop.is_set():
                    return pending
                self._changed.wait(min(remaining, 0.05))


# --------------------------------------------------------------------------- Discord


class _DiscordHandler(_JsonHandler):
    fake: FakeDiscord

    def do_POST(self) -> None:
        body = self._body()
        status, answer, headers = self.fake.handle(self.path, body)
        self.fake.requests.append(Received(self.path, body, dict(self.headers), time.monotonic(), status))
        self._send_json(status, answer, headers)


class FakeDiscord(LoopbackServer):
    """A Discord webhook ``/api/webhooks/<webhook_id>/<token>``; :attr:`webhook_url` is its full URL."""

    handler = _DiscordHandler
    thread_name = "fake-discord"

    def __init__(self, webhook_id: str, token: str) -> None:
        super().__init__()
        self.webhook_id = webhook_id
        self.token = token
        self.requests: list[Received] = []
        self.script = _Script()

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/api/webhooks/{self.webhook_id}/{self.token}"

    def fail(self, fail: Fail, times: int = 1) -> None:
        self.script.add(fail, times)

    def sent(self) -> list[dict[str, Any]]:
        return [r.body for r in list(self.requests) if r.status == 204]

    def handle(self, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        if path.split("?", maxsplit=1)[0] != f"/api/webhooks/{self.webhook_id}/{self.token}":
            return 404, {"message": "Unknown Webhook", "code": 10015}, {}
        fail = self.script.next()
        if fail is not None and fail.status == 429:
            wait = fail.retry_after_s or 1.0
            answer = {"message": "You are being rate limited.", "retry_after": wait, "global": False}
            return 429, answer, {"Retry-After": f"{wait:g}", "X-RateLimit-Scope": "user"}
        if fail is not None:
            return fail.status, {"message": fail.description, "code": 0}, {}
        if not isinstance(body, dict) or not (body.get("content") or body.get("embeds")):
            return 400, {"message": "Cannot send an empty message", "code": 50006}, {}
        return 204, None, {}


# --------------------------------------------------------------------------- a generic JSON webhook


class _WebhookHandler(_JsonHandler):
    fake: FakeWebhook

    def do_POST(self) -> None:
        body = self._body()
        fail = self.fake.script.next()
        status = fail.status if fail is not None else 200
        headers = {"Retry-After": f"{fail.retry_after_s:g}"} if fail is not None and fail.retry_after_s else {}
        self.fake.requests.append(Received(self.path, body, dict(self.headers), time.monotonic(), status))
        self._send_json(status, {"ok": status == 200}, headers)


class FakeWebhook(LoopbackServer):
    """Records every POST; answers 200 (or what was scripted with :meth:`fail`)."""

    handler = _WebhookHandler
    thread_name = "fake-webhook"

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Received] = []
        self.script = _Script()

    def fail(self, fail: Fail, times: int = 1) -> None:
        self.script.add(fail, times)

    def sent(self) -> list[Received]:
        return [r for r in list(self.requests) if r.status == 200]


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return bool(value)
        time.sleep(interval)
