"""Reading an agent CLI's output.

What a status or a message says (its error kind, its retry delay), and the state of one streamed run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from backends.base import WorkerHooks
from backends.evidence import NETWORK_ERROR, NETWORK_ERRORS_TO_STOP, REPORT_PATH
from protocol.types import ErrorKind

__all__ = [
    "StreamState",
    "classify_status",
    "json_object",
    "read_assistant_turn",
    "retry_after_in",
]


_RETRY_AFTER = re.compile(
    r"(?:retry|try again)[^0-9\n]{0,30}?(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?)?\b",
    re.IGNORECASE,
)


def retry_after_in(message: str) -> float | None:
    """Seconds to wait, when an error message says so ("Suggested retry after 1s")."""
    match = _RETRY_AFTER.search(message)
    if not match:
        return None
    value, unit = float(match.group(1)), (match.group(2) or "s").lower()
    if unit.startswith(("ms", "milli")):
        return value / 1000
    if unit.startswith("m"):
        return value * 60
    return value


def classify_status(status: int | None, message: str = "") -> ErrorKind:
    """The error kind of an HTTP status (and its message) reported by an agent CLI."""
    text = message.lower()
    if "max session turns" in text or "maximum number of turns" in text or "turn limit" in text:
        return "max_turns"
    if "context" in text and ("long" in text or "length" in text or "window" in text or "exceed" in text):
        return "context_too_long"
    if "prompt is too long" in text or "too many tokens" in text:
        return "context_too_long"
    if status == 429 or "rate limit" in text or "rate_limit" in text or "quota" in text:
        return "rate_limited"
    if status in (500, 502, 503, 504, 529) or "overloaded" in text or "unavailable" in text or "capacity" in text:
        return "overloaded"
    if status in (401, 403) or "api key" in text or "unauthorized" in text or "authentication" in text:
        return "auth"
    if status is None and NETWORK_ERROR.search(message):
        return "network"
    return "crash"


@dataclass
class StreamState:
    """What an agent's output said, accumulated line by line (on the worker's thread)."""

    session_id: str | None = None
    model: str | None = None
    texts: list[str] = field(default_factory=list)
    final_text: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_cached: int | None = None
    cost_usd: float | None = None
    turns: int = 0
    error_kind: ErrorKind | None = None
    error: str | None = None
    retry_after_s: float | None = None
    permission_denials: list[str] = field(default_factory=list)
    finished: bool = False  # the CLI reported the end of its run
    bad_lines: int = 0
    tools: dict[str, str] = field(default_factory=dict)  # tool call id -> tool name, for later results
    # Model traffic: a model answered (tokens, a turn of its own, a tool call).  Without it an
    # exit 0 proves nothing, and repeated network errors mean the endpoint is unreachable.
    traffic: bool = False
    network_errors: int = 0
    network_line: str | None = None  # the CLI's last line about the network error

    def add_usage(self, tokens_in: Any = None, tokens_out: Any = None, cached: Any = None) -> None:
        for name, value in (("tokens_in", tokens_in), ("tokens_out", tokens_out), ("tokens_cached", cached)):
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(self, name, (getattr(self, name) or 0) + value)
                self.traffic = self.traffic or value > 0

    def saw_model(self) -> bool:
        """Did a model answer?  (Backends that set tokens or cost directly count too.)"""
        return self.traffic or bool(self.tokens_in) or bool(self.tokens_out) or bool(self.cost_usd)

    def network_error(self, line: str) -> None:
        """The CLI said it cannot reach the model (a reconnect line, a refused connection)."""
        self.network_errors += 1
        self.network_line = " ".join(REPORT_PATH.sub("", line).split())[:500]

    def unreachable(self, threshold: int = NETWORK_ERRORS_TO_STOP) -> bool:
        """Network errors again and again, and not one answer from the model: stop waiting."""
        return not self.saw_model() and self.network_errors >= threshold

    def fail(self, kind: ErrorKind, message: str, retry_after_s: float | None = None) -> None:
        if self.error_kind is None or self.error_kind == "crash":
            self.error_kind = kind
            self.error = message[:2000]
        if retry_after_s is None and kind == "rate_limited":
            retry_after_s = retry_after_in(message)
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s


def json_object(value: object) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one: agents' event fields are read without trust."""
    return value if isinstance(value, dict) else {}


def read_assistant_turn(event: dict[str, Any], state: StreamState, hooks: WorkerHooks) -> None:
    """An ``assistant`` event of the Claude Code stream-json format (qwen-code writes it too):
    count the turn, keep its text, report each tool call as progress."""
    state.turns += 1
    message = json_object(event.get("message"))
    for block in message.get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str) and block["text"].strip():
            state.texts.append(block["text"])
        elif block.get("type") == "tool_use":
            state.traffic = True
            hooks.progress(None, f"turn {state.turns}: {block.get('name')}")
    if message.get("model") != "<synthetic>" and not event.get("is_api_error_message"):
        state.traffic = True  # Claude Code writes its own error text as a "<synthetic>" turn
