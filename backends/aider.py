"""aider, headless: ``aider --message-file F --yes-always --no-stream --no-pretty``.

Checked against aider 0.86.2 (``aider --help`` and runs against a local fake
Anthropic server through litellm).  aider has no JSON mode: everything —
its banner, the model's reply, the usage line, edits applied, API errors —
is plain text on stdout, and it exits 0 after a failed request.  This module
reads those lines:

- the banner (``Aider v…``, ``Model: …``, ``Git repo: …``, ``Repo-map: …``)
  ends at its first blank line; the reply is what follows up to the usage
  line ``Tokens: 2.3k sent, 10 cache hit, 20 received. Cost: $0.0070 message,
  $0.0070 session.`` (counts rounded by aider to ``k``; ``sent`` includes the
  cached tokens; the cost is aider's own, from litellm's price table, and
  ``session`` is the running total).  A second reply (aider "reflects" on
  edit or lint errors) has its own usage line; the final text is the last
  reply.
- litellm errors come as ``litellm.RateLimitError: …``,
  ``litellm.InternalServerError: … overloaded …``,
  ``litellm.AuthenticationError: …`` and so on, followed by ``Retrying in N
  seconds...`` while aider retries (up to about a minute); a context window
  overflow is reported as ``Model … has hit a token limit!``.  An error not
  followed by a reply is the attempt's error.

Choices made: ``--yes-always`` (aider then still never runs a shell command
it suggests — those need an explicit yes — so ``--no-suggest-shell-commands``
saves the tokens); no commits, update check, analytics (``--yes-always``
would otherwise opt in), release notes, ``.gitignore`` edit or URL scraping;
the chat and input histories go next to the attempt's log, not into the
project; ``--no-git`` outside a git repository (``--yes-always`` would create
one); a wide ``COLUMNS`` so rich wraps no line; ``BROWSER=true`` because
``--yes-always`` also accepts aider's offer to open the URL an API error
mentions; ``--dry-run`` for read-only roles (edits are shown, not written).
"full" gives aider nothing more than workspace-write: it edits files and runs
nothing.  aider keeps its repo-map cache in ``.aider.tags.cache.v*`` at the
repository root; those paths are left out of the files modified.

Not supported: ``max_turns`` (aider has no turn limit; it reflects at most 3
times) and resuming (aider has no session id; ``--restore-chat-history``
only replays a history file).  The prompt is read from ``order.prompt_file``
(``--message-file``), not stdin.  aider (through python-dotenv) also loads
``.env`` from the git root and HOME, which may add keys of its own.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import msgspec

from backends.agent_cli import AgentCliBackend
from backends.agent_stream import StreamState, classify_status, retry_after_in
from backends.base import WorkerHooks
from backends.process_types import ProcessOutcome
from protocol.messages import AttemptResult, WorkOrder
from protocol.types import ErrorKind

__all__ = ["AiderBackend", "AiderOutput", "parse_count"]

#: litellm's provider prefix (``anthropic/claude-…``) -> the key variable litellm reads.
PROVIDER_KEYS: dict[str, str] = {
    "anthropic": "ANTHROPIC_API_KEY",
    "openai": "OPENAI_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "groq": "GROQ_API_KEY",
    "xai": "XAI_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "dashscope": "DASHSCOPE_API_KEY",
}
_BARE_MODELS: tuple[tuple[str, str], ...] = (
    ("claude", "anthropic"),
    ("gpt-", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("deepseek", "deepseek"),
)

_USAGE = re.compile(
    r"^Tokens: (?P<sent>[\d.,]+[kKmM]?) sent"
    r"(?:, (?P<write>[\d.,]+[kKmM]?) cache write)?"
    r"(?:, (?P<hit>[\d.,]+[kKmM]?) cache hit)?"
    r", (?P<received>[\d.,]+[kKmM]?) received\."
)
_COST = re.compile(r"Cost: \$(?P<message>[\d.]+) message, \$(?P<session>[\d.]+) session\.")
_LITELLM = re.compile(r"^litellm\.(?P<name>\w+):\s*(?P<message>.*)$")
_RETRYING = re.compile(r"^Retrying in [\d.]+ seconds")
_TOKEN_LIMIT = re.compile(r"^Model .+ has hit a token limit!")
_HTTP = re.compile(r"\b(4\d\d|5\d\d)\b")
_MODEL_LINE = re.compile(r"^(?:Main )?[Mm]odel: (\S+)")
_EDIT_APPLIED = re.compile(r"^(Applied edit to|Did not apply edit to) (.+)$")
#: aider's own messages, never part of a reply.
_TOOL_LINES = re.compile(
    r"^(?:Aider v\d|Model: |Main model: |Weak model: |Editor model: |Git repo: |Repo-map: |Added .+ to the chat"
    r"|Cur working dir: |Note: |Detected dumb terminal|Update git (?:name|email) with|Warning: |Tokens: |Cost: "
    r"|Applied edit to |Did not apply edit to |Commit [0-9a-f]{7}|Retrying in |litellm\.|The API provider "
    r"|Empty response received from LLM|Only \d+ reflections allowed|The LLM did not conform to the edit format"
    r"|Committing .+ before applying edits|Creating empty file |Unable to |Restored previous conversation"
    r"|HTTPSConnectionPool\(|Can't initialize prompt toolkit|Insufficient credits)"
)
_NAMED_KINDS: dict[str, ErrorKind] = {
    "RateLimitError": "rate_limited",
    "RouterRateLimitError": "rate_limited",
    "AuthenticationError": "auth",
    "PermissionDeniedError": "auth",
    "ContextWindowExceededError": "context_too_long",
    "InternalServerError": "overloaded",
    "ServiceUnavailableError": "overloaded",
    "BadGatewayError": "overloaded",
    "Timeout": "overloaded",
}
_COLUMNS = "4096"  # aider prints through rich, which wraps at the terminal width


def parse_count(text: str) -> int:
    """aider's rounded token counts: ``987``, ``1.2k``, ``12k``, ``1.5M``."""
    text = text.replace(",", "").strip()
    scale = 1
    if text[-1:] in ("k", "K"):
        scale, text = 1_000, text[:-1]
    elif text[-1:] in ("m", "M"):
        scale, text = 1_000_000, text[:-1]
    return round(float(text) * scale)


def _in_git_repo(path: Path) -> bool:
    return any((folder / ".git").exists() for folder in (path, *path.parents))


@dataclass
class AiderOutput:
    """What aider's text output has said so far, beyond what a StreamState holds."""

    in_banner: bool = False
    banner_done: bool = False
    reply: list[str] = field(default_factory=list)
    error: tuple[ErrorKind, str, float | None] | None = None  # not yet followed by a reply

    def feed(self, text: str, state: StreamState, hooks: WorkerHooks) -> None:
        """Take one stdout line (without its newline)."""
        stripped = text.strip()
        usage = _USAGE.match(stripped)
        if usage:
            self._usage(usage, stripped, state)
            return
        cost = _COST.search(stripped)
        if cost:  # on a line of its own when aider reports both cache writes and hits
            state.cost_usd = float(cost.group("session"))
            return
        if self._error(stripped) or not self._after_banner(stripped, state, hooks):
            return
        applied = _EDIT_APPLIED.match(stripped)
        if applied:
            hooks.progress(None, f"{applied.group(1).lower()} {applied.group(2)}"[:200])
        elif not _TOOL_LINES.match(stripped):
            self.reply.append(text.rstrip())

    def _after_banner(self, stripped: str, state: StreamState, hooks: WorkerHooks) -> bool:
        """False while the line belongs to aider's start-up banner (or what precedes it)."""
        if self.banner_done:
            return True
        if stripped.startswith("Aider v"):
            self.in_banner = True
        elif self.in_banner and not stripped:
            self.in_banner, self.banner_done = False, True
            hooks.progress(None, f"aider started ({state.model})" if state.model else "aider started")
        elif self.in_banner:
            model = _MODEL_LINE.match(stripped)
            if model and not state.model:
                state.model = model.group(1)
        return False

    def _usage(self, match: re.Match[str], line: str, state: StreamState) -> None:
        state.finished = True
        state.turns += 1
        cached = parse_count(match.group("hit")) if match.group("hit") else 0
        state.add_usage(parse_count(match.group("sent")), parse_count(match.group("received")), cached)
        cost = _COST.search(line)
        if cost:
            state.cost_usd = float(cost.group("session"))
        reply = "\n".join(self.reply).strip()
        self.reply = []
        if reply:
            state.texts.append(reply + "\n")
            state.final_text = reply
            self.error = None  # a reply came after an error that aider retried

    def _error(self, line: str) -> bool:
        if _RETRYING.match(line):
            return True
        if _TOKEN_LIMIT.match(line):
            self.error = ("context_too_long", line, None)
            return True
        match = _LITELLM.match(line)
        if not match:
            return False
        name, message = match.group("name"), match.group("message")
        status_match = _HTTP.search(message)
        status = int(status_match.group(1)) if status_match else None
        kind = _NAMED_KINDS.get(name) or classify_status(status, message)
        if kind == "overloaded" and ("rate limit" in message.lower() or status == 429):
            kind = "rate_limited"
        self.error = (kind, f"{name}: {message}"[:2000], retry_after_in(message) if kind == "rate_limited" else None)
        return True

    def close(self, state: StreamState) -> None:
        """The output ended: a pending error is the attempt's; a reply without usage still counts."""
        if self.error is not None:
            kind, message, retry = self.error
            state.fail(kind, message, retry)
        elif state.final_text is None:
            reply = "\n".join(self.reply).strip()
            if reply:
                state.texts.append(reply + "\n")
                state.final_text = reply


class AiderBackend(AgentCliBackend):
    name: ClassVar[str] = "aider"
    program: ClassVar[str] = "aider"
    install_hint: ClassVar[str] = "python -m pip install aider-install && aider-install (or pipx install aider-chat)"
    key_variables: ClassVar[tuple[str, ...]] = tuple(dict.fromkeys(PROVIDER_KEYS.values()))
    passthrough_variables: ClassVar[tuple[str, ...]] = (
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_API_BASE",
        "OPENAI_BASE_URL",
        "OPENAI_API_BASE",
        "GEMINI_API_BASE",
        "HTTPS_PROXY",
        "NO_PROXY",
    )
    credential_files: ClassVar[tuple[str, ...]] = (".aider/oauth-keys.env",)
    prompt_on_stdin: ClassVar[bool] = False
    probe_flags: ClassVar[tuple[str, ...]] = (
        "--message-file",
        "--yes-always",
        "--no-stream",
        "--no-pretty",
        "--no-auto-commits",
        "--no-check-update",
        "--no-show-model-warnings",
        "--no-analytics",
        "--no-gitignore",
        "--dry-run",
        "--model",
    )

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__(environ)
        self._attempt = threading.local()  # this worker thread's AiderOutput (run() is synchronous)

    @staticmethod
    def key_for(model: str | None) -> str | None:
        """The one key variable litellm reads for ``model``, if its provider is known."""
        if not model:
            return None
        if "/" in model:
            return PROVIDER_KEYS.get(model.split("/", 1)[0].lower())
        lowered = model.lower()
        return next((PROVIDER_KEYS[provider] for prefix, provider in _BARE_MODELS if lowered.startswith(prefix)), None)

    # --- the command ----------------------------------------------------------------------

    def _argv(self, program: str, order: WorkOrder, prompt: str) -> list[str]:
        history = Path(order.log_path)
        argv = [
            program,
            "--message-file",
            order.prompt_file,
            "--yes-always",
            "--no-stream",
            "--no-pretty",
            "--no-fancy-input",
            "--no-auto-commits",
            "--no-check-update",
            "--no-show-release-notes",
            "--no-show-model-warnings",
            "--no-analytics",
            "--no-gitignore",
            "--no-detect-urls",
            "--no-suggest-shell-commands",
            "--chat-history-file",
            str(history.with_name(history.name + ".aider.chat.md")),
            "--input-history-file",
            str(history.with_name(history.name + ".aider.input")),
        ]
        if order.model:
            argv += ["--model", order.model]
        if order.permission == "read-only":
            argv.append("--dry-run")
        if not _in_git_repo(Path(order.workdir)):
            argv.append("--no-git")
        return argv

    def _environment(self, order: WorkOrder) -> dict[str, str]:
        env = super()._environment(order)
        key = self.key_for(order.model)
        if key:  # a known provider: its key only
            for name in self.key_variables:
                if name != key:
                    env.pop(name, None)
        return env

    def _extra_env(self, order: WorkOrder) -> dict[str, str]:
        # BROWSER: with --yes-always aider "opens" every URL an API error mentions; make that a no-op.
        return {"COLUMNS": _COLUMNS, "NO_COLOR": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "BROWSER": "true"}

    # --- reading its output ---------------------------------------------------------------

    def _output(self) -> AiderOutput:
        output = getattr(self._attempt, "output", None)
        if output is None:
            output = self._attempt.output = AiderOutput()
        return output

    def run(self, order: WorkOrder, hooks: WorkerHooks, cancel: threading.Event) -> AttemptResult:
        self._attempt.output = AiderOutput()
        try:
            result = super().run(order, hooks, cancel)
        finally:
            self._attempt.output = None
        kept = tuple(
            path
            for path in result.files_modified
            if not any(p.startswith(".aider.tags.cache") for p in Path(path).parts)
        )
        return msgspec.structs.replace(result, files_modified=kept) if kept != result.files_modified else result

    def _on_line(self, line: bytes, state: StreamState, hooks: WorkerHooks) -> None:
        self._output().feed(line.decode("utf-8", "replace").rstrip("\r\n"), state, hooks)

    def _finish(self, outcome: ProcessOutcome, state: StreamState) -> None:
        self._output().close(state)
        self._attempt.output = None
        if outcome.exit_code and state.error_kind is None:
            tail = [line for line in outcome.stderr_tail.decode("utf-8", "replace").splitlines() if line.strip()]
            message = tail[-1].strip() if tail else f"aider exited with code {outcome.exit_code}"
            state.fail(classify_status(None, message), message)
