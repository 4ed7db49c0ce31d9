"""Keeping secrets out of everything the executor writes, logs, prints or sends.

Two kinds of secret are masked by :func:`redact`:

- *known values*: every key, bot token, webhook secret and bearer token this process
  learns is registered with :func:`register_secret` as soon as it is learned (a
  :class:`session.secret.Secret` registers itself; a worker's environment is
  registered before the worker starts, :func:`register_environment`), and masked
  wherever it appears, whatever its shape;
- *well-known shapes*: provider keys (``sk-…``, ``sk-ant-…``, ``AIza…``, ``ghp_…``,
  ``github_pat_…``, ``xoxb-…``), Telegram bot tokens, ``Bearer …`` credentials, and a
  long mixed value right after a name such as ``api_key=`` or ``"token": "…"`` — for
  a key the executor never saw (one an agent CLI found on its own).

A masked secret reads ``…`` plus its last 4 characters (:func:`mask`), the same hint
that ``executor keys list`` shows on purpose, so a leak can be traced to its key
without repeating it.  Ordinary text (git SHAs, paths, ids) is left alone: a shape
needs its prefix or a secret-like name in front of it.

Where text is redacted (one place each, not per backend): the state database's
connection (:func:`redacting_connection`), the run log's handler (:class:`RedactingFilter`),
the console and ``--json-events`` sinks, the message bus, the Markdown mirror, worker logs
on disk (:class:`LineRedactor`, :class:`RedactingWriter`), a worker's report file, prompt
files, the artifacts the executor itself writes (openai, mcp), notifications and
``check --json``.  Files an agent writes itself (its artifacts) are its own and are not
rewritten.

Thread-safe.  Pure functions apart from the process-wide registry; nothing at import.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

__all__ = [
    "LineRedactor",
    "RedactingFilter",
    "RedactingWriter",
    "Verbatim",
    "mask",
    "on_new_secrets",
    "protect_library_logs",
    "redact",
    "redact_bytes",
    "redact_data",
    "redacting_connection",
    "register_environment",
    "register_secret",
    "registered_secrets",
    "secrets_known",
]

#: Shorter values are not registered: masking every "abc" in every line would garble
#: text, and no key or token is that short.
MIN_SECRET_LEN = 8
#: Below this, a mask shows no tail at all: 4 characters of a short secret is too much of it.
_MIN_LEN_TO_SHOW_TAIL = 12

#: The letters of the JSON escapes that end in a word character (``\\n``, ``\\t``...; ``\\u`` has
#: its four hex digits): text right after one of them starts a word in the encoded text.
_ESCAPE_LETTERS = "nrtbf"
# A shape must not start in the middle of a word ("task-…" holds "sk-"), but may follow
# a JSON escape (``\nsk-…`` in an encoded payload).  One alternation behind one
# boundary check: Python's re tries each branch at each position, so this is much faster.
_SHAPES = re.compile(
    rf"(?:(?<![A-Za-z0-9_])|(?<=\\[{_ESCAPE_LETTERS}])|(?<=\\u[0-9A-Fa-f]{{4}}))(?:"
    r"sk-(?:ant-)?[A-Za-z0-9_-]{16,}"  # Anthropic; OpenAI (sk-proj-…) and the many compatible services
    r"|AIza[0-9A-Za-z_-]{35}"  # Google
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}"  # GitHub
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab
    r"|\d{6,12}:[A-Za-z0-9_-]{35}"  # Telegram bot token
    r")(?![A-Za-z0-9_-])"
)
#: A character of a credential-like value (base64, URL-safe base64, hex, tokens with dots).
_VALUE_CHARACTER = r"[A-Za-z0-9+/_.~-]"
#: A credential-like run of characters; masked only after a secret-like name (:data:`_LEAD`).
_VALUE = re.compile(_VALUE_CHARACTER + r"{20,}={0,2}")
#: What may stand right before a masked value: ``Bearer ``, ``api_key=``, ``"token": "``, ...
_LEAD = re.compile(
    r"(?i)(?:(?:bearer|basic)\s+"
    r"|(?:api[_-]?key|apikey|secret|token|passw(?:or)?d|credential|authorization|auth|key)s?"
    r"\\?[\"']?\s*[:=]\s*\\?[\"']?\s*(?:(?:bearer|basic)\s+)?)$"
)
_LEAD_WINDOW = 40
# Cheap necessary conditions, tested before the costly patterns run over a large text
# (a worker's output at line rate): every match of _SHAPES holds one of these literals
# or, for a Telegram token, a ':' followed by 35 token characters; every masked _VALUE
# follows a _LEAD, which ends in ':' or '=' or a "Bearer "/"Basic " word.
# A search for one character is a memchr; for a word it is much slower, so a rare
# character of the word is looked for first.
_SHAPE_GITHUB = re.compile(r"gh[pousr]_")
_SHAPE_TELEGRAM = re.compile(r":[A-Za-z0-9_-]{35}")
_DIGIT = re.compile(r"\d")
_HEX4 = re.compile(r"[0-9A-Fa-f]{4}")
_LETTER = re.compile(r"[A-Za-z]")

_lock = threading.Lock()
_secrets: set[str] = set()
_known: re.Pattern[str] | None = None  # one alternation over _secrets, longest first
_protected: set[str] = set()
_listeners: list[Callable[[tuple[str, ...]], None]] = []


def mask(value: str) -> str:
    """``…`` and the last 4 characters of ``value``; just ``…`` when it is too short to show any.

    The one way a secret is shown: in key lists, config dumps, and in place of a leak.
    """
    return f"…{value[-4:]}" if len(value) >= _MIN_LEN_TO_SHOW_TAIL else "…"


def register_secret(*values: str | None) -> None:
    """Mask ``values`` in everything redacted from now on (``None``, short and blank values are skipped)."""
    global _known  # noqa: PLW0603 - the registry is process-wide by design
    fresh: set[str] = set()
    for given in values:
        value = (given or "").strip()
        if len(value) < MIN_SECRET_LEN:
            continue
        fresh.add(value)
        escaped = json.dumps(value)[1:-1]  # as it appears inside an encoded JSON string
        if escaped != value:
            fresh.add(escaped)
    with _lock:
        if fresh <= _secrets:
            return
        added = tuple(fresh - _secrets)
        _secrets.update(fresh)
        ordered = sorted(_secrets, key=len, reverse=True)  # a longer secret may contain a shorter one
        _known = re.compile("|".join(re.escape(secret) for secret in ordered))
        listeners = list(_listeners)
    for listener in listeners:
        listener(added)


def registered_secrets() -> tuple[str, ...]:
    """Every secret registered so far: only for handing to a helper process of this run (the task
    mirror's), which must mask what this process masks."""
    with _lock:
        return tuple(_secrets)


def on_new_secrets(listener: Callable[[tuple[str, ...]], None]) -> Callable[[], None]:
    """Call ``listener`` with the values each later :func:`register_secret` adds (on the
    registering thread: it must not block); returns what unsubscribes it."""
    with _lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return unsubscribe


def secrets_known() -> int:
    """How many secrets are registered: it grows whenever one is added, so text redacted before
    may need redacting again (a file kept from an earlier pass, say)."""
    return len(_secrets)


#: Words of a name (an env variable, a header, a config key) that make its value a secret:
#: ``OPENAI_API_KEY``, ``ANTHROPIC_AUTH_TOKEN``, ``DISCORD_WEBHOOK_URL``, ``X-Api-Key``,
#: ``apiKey``, ``Authorization`` -- but not ``GIT_AUTHOR_NAME``, ``PWD`` or ``monkey``.
_SECRET_WORDS = frozenset(
    {"KEY", "APIKEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASS", "CREDENTIAL", "CREDENTIALS"}
    | {"AUTH", "AUTHORIZATION", "WEBHOOK", "PAT", "COOKIE"}
)
_NAME_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z0-9]+(?![a-z])")


@functools.lru_cache(maxsize=1024)
def is_secret_name(name: str) -> bool:
    """Whether a value under ``name`` is a secret (words split at ``_``, ``-``, ``.`` and camelCase)."""
    return not _SECRET_WORDS.isdisjoint(word.upper() for word in _NAME_WORDS.findall(name))


def register_environment(environ: Mapping[str, str]) -> None:
    """Register the values of ``environ``'s secret-named variables (``*_API_KEY``, ``*_TOKEN``, ...).

    Called with a worker's environment before the worker starts, so that whatever it
    prints of them is masked.  Paths (``GOOGLE_APPLICATION_CREDENTIALS=/x/y.json``) are
    not secrets and are skipped.
    """
    register_secret(
        *(value for name, value in environ.items() if is_secret_name(name) and not value.startswith(("/", "~")))
    )


def _escape_body(text: str, start: int, value: str) -> int:
    """How many of ``value``'s first characters finish a JSON escape whose backslash stands right
    before it (``\\t`` of ``"token:\\tabc…"``, ``\\u00e9``): they stay, or the text would no
    longer decode (a stored event that cannot be read back)."""
    backslashes = 0
    while start - backslashes > 0 and text[start - backslashes - 1] == "\\":
        backslashes += 1
    if backslashes % 2 == 0:
        return 0  # no backslash, or an escaped one ("\\\\")
    if value[0] == "u" and _HEX4.fullmatch(value, 1, 5):
        return 5
    return 1 if value[0] in _ESCAPE_LETTERS or value[0] == "/" else 0


def _may_follow_a_lead(text: str, start: int) -> bool:
    """A necessary condition for :data:`_LEAD` to match right before ``start``, cheap enough
    for every path in a prompt (each a :data:`_VALUE` match): every match of it ends in ``:``
    or ``=`` and then only whitespace, quotes and a backslash, or in ``bearer``/``basic``
    and whitespace, so in an ``r`` or a ``c`` (its ``(?i)`` folds no other letter to them)."""
    at = start - 1
    while at >= 0 and (text[at].isspace() or text[at] in "\"'\\"):
        at -= 1
    return at >= 0 and text[at] in ":=rRcC"


def _masked_after_lead(text: str, match: re.Match[str]) -> str:
    """A :data:`_VALUE` match of ``text``, masked if a :data:`_LEAD` stands right before it."""
    whole = match.group(0)
    if not _may_follow_a_lead(text, match.start()):
        return whole  # a path or a word in running text: no secret-like name right before it
    keep = _escape_body(text, match.start(), whole)
    value = whole[keep:]
    if len(_DIGIT.findall(value)) < 2 or not _LETTER.search(value):
        return whole  # a word or a path after "token:", not a credential
    before = text[max(0, match.start() - _LEAD_WINDOW) : match.start()]
    return whole[:keep] + mask(value) if _LEAD.search(before) else whole


def _mask_after_lead(text: str) -> str:
    """Every :data:`_VALUE` of ``text`` looked at: the way for text that is not ASCII, where
    ``(?i)`` lets non-ASCII letters stand for ASCII ones in a lead."""
    return _VALUE.sub(functools.partial(_masked_after_lead, text), text)


def redact(text: str) -> str:
    """``text`` with every registered secret and every well-known key shape masked."""
    if not text:
        return text
    known = _known
    if known is not None:
        text = known.sub(lambda match: mask(match.group(0)), text)
    if _may_hold_shape(text):
        text = _SHAPES.sub(lambda match: mask(match.group(0)), text)
    if not text.isascii():  # (?i) also folds four non-ASCII letters to ASCII ones (the long s, the Kelvin sign...)
        return _mask_after_lead(text)
    windows = _value_windows(text)
    return _mask_in_windows(text, windows) if windows else text


def _may_hold_shape(text: str) -> bool:
    if "-" in text and (_begins_a_word(text, "sk-") or "xox" in text or "glpat-" in text):
        return True
    if "_" in text and ("github_pat_" in text or _SHAPE_GITHUB.search(text) is not None):
        return True
    if "I" in text and "AIza" in text:
        return True
    return ":" in text and _SHAPE_TELEGRAM.search(text) is not None


_WORD_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def _begins_a_word(text: str, literal: str) -> bool:
    """Whether ``literal`` occurs where a :data:`_SHAPES` match may begin: after no word
    character, or right after a JSON escape (``\\n``).  Our own prompts and records say
    ``task-analysis.json`` ("sk-" inside a word), which sent every one of them through the
    whole pattern; finding the literal is a memchr-fast search per occurrence instead."""
    at = text.find(literal)
    while at != -1:
        if at == 0 or text[at - 1] not in _WORD_CHARACTERS:
            return True
        if at >= 2 and text[at - 2] == "\\" and text[at - 1] in _ESCAPE_LETTERS:
            return True
        if at >= 6 and text[at - 6 : at - 4] == "\\u" and _HEX4.fullmatch(text, at - 4, at):
            return True
        at = text.find(literal, at + 1)
    return False


#: A word every :data:`_LEAD` holds (``api_key`` and ``apikey`` hold "key", ``authorization``
#: holds "auth", ``passwd`` and ``password`` hold "passw"), in lower case.
_LEAD_WORDS = ("key", "token", "secret", "passw", "auth", "credential", "bearer", "basic")
#: The first 20 characters of a maximal run of :data:`_VALUE`'s characters, so where a
#: :data:`_VALUE` match of ``_VALUE.sub`` starts (looked for from inside a text: the look
#: behind sees the characters before where the search starts).
_VALUE_START = re.compile(f"(?<!{_VALUE_CHARACTER}){_VALUE_CHARACTER}{{20}}")


def _value_windows(text: str) -> list[tuple[int, int]]:
    """Where in ASCII ``text`` a value masked after a lead may start, as sorted, disjoint
    ``(first, last)`` ranges of positions; none for most text.

    Every lead holds one of :data:`_LEAD_WORDS` and must lie wholly within the
    :data:`_LEAD_WINDOW` characters before its value, so a value masked after a lead starts
    between the end of such a word and :data:`_LEAD_WINDOW` characters after the word's start.
    Finding the words is a handful of fast searches; the whole look runs a pattern over every
    run of 20 characters (every path of a prompt) and a Python call for each."""
    words: tuple[str, ...]
    if ":" in text or "=" in text:
        words = _LEAD_WORDS
    elif "b" in text or "B" in text:  # without ':' and '=' only "Bearer "/"Basic " can lead
        words = ("bearer", "basic")
    else:
        return []
    lowered = text.lower()
    found = []
    for word in words:
        at = lowered.find(word)
        while at != -1:
            found.append((at + len(word), at + _LEAD_WINDOW))
            at = lowered.find(word, at + 1)
    if len(found) < 2:
        return found
    found.sort()
    windows = [found[0]]
    for first, last in found[1:]:
        if first <= windows[-1][1] + 1:
            windows[-1] = (windows[-1][0], max(last, windows[-1][1]))
        else:
            windows.append((first, last))
    return windows


def _mask_in_windows(text: str, windows: list[tuple[int, int]]) -> str:
    """What :func:`_mask_after_lead` makes of ASCII ``text``, looking only at the values that
    start in ``windows`` (:func:`_value_windows`): the others it would leave as they are.
    The values are the same ones: ``_VALUE.sub`` matches each maximal run of 20 characters
    or more, from its start; a run that begins before a window is not one of its values."""
    pieces: list[str] = []
    copied = 0  # text[:copied] is in pieces
    at = 0  # every run starting before `at` has been looked at
    for first, last in windows:
        at = max(at, first)
        # A value starting at `last` at the latest has its first 20 characters before last + 20.
        while (start := _VALUE_START.search(text, at, last + 20)) is not None:
            value = _VALUE.match(text, start.start())  # the whole value, past the window's end
            if value is None:  # not seen: its first 20 characters were there
                break
            masked = _masked_after_lead(text, value)
            if masked != value.group(0):
                pieces.append(text[copied : value.start()])
                pieces.append(masked)
                copied = value.end()
            at = value.end()
    if not pieces:
        return text
    pieces.append(text[copied:])
    return "".join(pieces)


def redact_bytes(data: bytes) -> bytes:
    """:func:`redact` for raw output (UTF-8; undecodable bytes pass through unchanged)."""
    if not data:
        return data
    return redact(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")


def redact_data(value: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, tuples, strings) with every string redacted; keys too."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_data(key): redact_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_data(item) for item in value)
    return value


# --------------------------------------------------------------------------- streams


class LineRedactor:
    """Redacts output that arrives in pieces: whole lines at a time, so a secret split
    between two pieces is still seen whole.  A line is held back at most ``hold`` bytes
    (past that it is let out in pieces, and a secret cut at a piece's end is missed)."""

    def __init__(self, hold: int = 256 * 1024) -> None:
        self.hold = hold
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        """What may be written now of everything fed so far, redacted."""
        self._held += chunk
        cut = self._held.rfind(b"\n") + 1
        if cut == 0 and len(self._held) < self.hold:
            return b""
        ready, self._held = (self._held[:cut], self._held[cut:]) if cut else (self._held, b"")
        return redact_bytes(ready)

    def rest(self) -> bytes:
        """The last, unfinished line, redacted (call once the output has ended)."""
        ready, self._held = self._held, b""
        return redact_bytes(ready)


class RedactingWriter:
    """A text file's ``write``/``flush``/``close``, redacted a line at a time (:class:`LineRedactor`)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lines = LineRedactor()

    def write(self, text: str) -> int:
        self._stream.write(self._lines.feed(text.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape"))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        self._stream.write(self._lines.rest().decode("utf-8", "surrogateescape"))
        self._stream.close()


# --------------------------------------------------------------------------- SQLite


class Verbatim(str):
    """Text the executor made itself and proved harmless -- a time it took, a word of its own
    vocabulary -- which a redacting connection binds as it is (redacting it would change nothing).

    Never wrap anything an agent, a model, a task, a config file or a person supplied.  The
    mark does not spread: slicing, joining or formatting a ``Verbatim`` gives a plain ``str``.
    msgspec does not encode it: use it only for a value bound to a statement."""

    __slots__ = ()


def _redacted(value: Any) -> Any:
    if isinstance(value, str) and type(value) is not Verbatim:
        return redact(value)
    return value


def _redacted_parameters(parameters: Any) -> Any:
    if isinstance(parameters, (list, tuple)):
        return [_redacted(value) for value in parameters]
    if isinstance(parameters, Mapping):
        return {name: _redacted(value) for name, value in parameters.items()}
    return parameters


class _RedactingConnection(sqlite3.Connection):
    """A connection whose every bound text parameter is redacted (but a :class:`Verbatim`):
    nothing secret reaches the file."""

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        return super().execute(sql, _redacted_parameters(parameters))

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> sqlite3.Cursor:
        return super().executemany(sql, (_redacted_parameters(parameters) for parameters in seq_of_parameters))


def redacting_connection(path: str, **kwargs: Any) -> sqlite3.Connection:
    """``sqlite3.connect(path, **kwargs)``, but text bound through ``execute``/``executemany`` is redacted.

    SQL literals are not touched (the executor never puts data in SQL text), nor are
    statements run on a cursor made with ``cursor()``.
    """
    return sqlite3.connect(path, factory=_RedactingConnection, **kwargs)


# --------------------------------------------------------------------------- logging


class RedactingFilter(logging.Filter):
    """A handler or logger filter that redacts each record's message (and drops records below ``min_level``).

    Put it on *handlers*: a logger's filters see only records logged on that very logger,
    not those of its children.
    """

    def __init__(self, min_level: int = logging.NOTSET) -> None:
        super().__init__()
        self.min_level = min_level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level:
            return False
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


#: Libraries that log the URLs they call (httpx at INFO, Apprise at DEBUG), and a
#: Telegram or Discord URL holds its token in the path.
_LIBRARY_LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "apprise",
)


def protect_library_logs() -> None:
    """Filter the loggers of httpx, httpcore and Apprise (once per process; later calls do nothing).

    Needed besides the handlers' filter for programs that log through handlers of their
    own; Apprise's chatter below WARNING is dropped (it prints pieces of URLs).
    """
    with _lock:
        todo = [name for name in _LIBRARY_LOGGERS if name not in _protected]
        _protected.update(todo)
    for name in todo:
        min_level = logging.WARNING if name == "apprise" else logging.NOTSET
        logging.getLogger(name).addFilter(RedactingFilter(min_level))
