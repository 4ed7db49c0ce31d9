"""The one redaction layer: registered values and well-known key shapes are masked, ordinary text is not."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from session.redaction import (
    _LEAD,
    RedactingFilter,
    RedactingWriter,
    Verbatim,
    _mask_after_lead,
    _mask_in_windows,
    _may_follow_a_lead,
    _value_windows,
    is_secret_name,
    mask,
    redact,
    redact_bytes,
    redact_data,
    redacting_connection,
    register_environment,
    register_secret,
)

SHA = "3f9a2b1c4d5e6f708192a3b4c5d6e7f801234567"


def test_mask_shows_the_last_four_characters_of_a_long_value_and_nothing_of_a_short_one() -> None:
    assert mask("sk-ant-0123456789abcdef") == "…cdef"
    assert mask("short-value") == "…"


def test_a_registered_value_of_any_shape_is_masked_everywhere_it_appears() -> None:
    secret = "plainWORDSwithoutAnyPrefix42"
    register_secret(secret)
    text = redact(f"error: {secret} refused; again:{secret}.")
    assert secret not in text
    assert text == "error: …ix42 refused; again:…ix42."


def test_a_longer_registered_secret_is_masked_whole_even_when_it_contains_a_shorter_one() -> None:
    register_secret("innerSECRET1234", "outer-innerSECRET1234-outer99")
    assert redact("x outer-innerSECRET1234-outer99 y") == "x …er99 y"


def test_short_and_missing_values_are_not_registered() -> None:
    register_secret("abc", None, "       ")
    assert redact("abc def") == "abc def"


@pytest.mark.parametrize(
    "secret",
    [
        "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
        "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
        "sk-AbCdEfGhIjKlMnOpQrSt0123456789",
        "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
        "ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "xoxb-123456789012-123456789012-AbCdEfGhIjKlMnOp",
        "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw8",
    ],
)
def test_well_known_key_shapes_are_masked_without_being_registered(secret: str) -> None:
    for text in (f"key is {secret}.", f'{{"error":"bad\\n{secret}"}}', f"({secret})"):
        assert secret not in redact(text), text


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer abcDEF0123456789ghiJKL",
        "curl -H 'authorization: bearer abcDEF0123456789ghiJKL'",
        "ANTHROPIC_API_KEY=abcDEF0123456789ghiJKL",
        '{"api_key": "abcDEF0123456789ghiJKL"}',
        '{\\"token\\": \\"abcDEF0123456789ghiJKL\\"}',
        "password: abcDEF0123456789ghiJKL",
        "client_secret=abcDEF0123456789ghiJKL&x=1",
    ],
)
def test_a_long_mixed_value_after_a_secret_like_name_is_masked(text: str) -> None:
    assert "abcDEF0123456789ghiJKL" not in redact(text)
    assert "…iJKL" in redact(text)


@pytest.mark.parametrize(
    "text",
    [
        "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
        "ghs_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
        "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw8",
        "then Bearer abcDEF0123456789ghiJKL again",
        "then BASIC abcDEF0123456789ghiJKL again",
        "api_key=abcDEF0123456789ghiJKL",
    ],
)
def test_a_secret_in_a_flood_of_plain_output_is_masked(text: str) -> None:
    flood = "y\n" * 50_000
    redacted = redact(flood + text + "\n" + flood)
    assert redacted.startswith(flood)
    assert redacted.endswith(flood)
    assert redacted.count("…") == 1, text


@pytest.mark.parametrize(
    "text",
    [
        f"commit {SHA} fixes the parser",
        f"git checkout {SHA[:12]} && git log {SHA}",
        '{"key_id": "anthropic-3f9a2b1c4d5e", "tokens_in": 123456, "tokens_out": 789}',
        "task-analysis-for-the-whole-project.json and desk-lamp-with-a-very-long-name",
        "the token budget is spent; see src/session/keypool.py for the key rotation",
        "token: not-a-credential-just-words",
        "IMPL-001 passed 42 tests in 3.2s",
        "https://example.com/path/to/some/resource?page=2",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_redaction_is_idempotent() -> None:
    once = redact("sk-ant-api03-AbCdEfGhIjKlMnOpQrSt and Bearer abcDEF0123456789ghiJKL")
    assert redact(once) == once


def test_a_value_with_json_special_characters_is_masked_in_encoded_json_too() -> None:
    secret = 'quote"and\\slash-secret-9876'
    register_secret(secret)
    encoded = json.dumps({"error": f"refused {secret}"})
    assert "slash-secret" not in redact(encoded)
    json.loads(redact(encoded))  # still valid JSON


def test_redact_bytes_keeps_undecodable_bytes() -> None:
    register_secret("bytesSECRETvalue1234")
    data = b"\xff\xfe out: bytesSECRETvalue1234\n"
    assert redact_bytes(data) == b"\xff\xfe out: " + "…1234".encode() + b"\n"


def test_redact_data_masks_strings_in_nested_values() -> None:
    register_secret("nestedSECRETvalue5678")
    data = {"a": ["x nestedSECRETvalue5678", 3, None], "b": {"c": ("nestedSECRETvalue5678",)}}
    assert redact_data(data) == {"a": ["x …5678", 3, None], "b": {"c": ("…5678",)}}


def test_the_secret_named_variables_of_an_environment_are_registered_and_paths_are_not() -> None:
    register_environment(
        {
            "MY_SERVICE_API_KEY": "envKEYvalue-000111222",
            "SOME_AUTH_TOKEN": "envTOKENvalue-333444555",
            "GOOGLE_APPLICATION_CREDENTIALS": "/home/me/creds-file-0123.json",
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8-something-long",
            "GIT_AUTHOR_NAME": "Jane Q. Developer",
            "KEYBOARD_LAYOUT": "dvorak-programmer",
        }
    )
    kept = "/home/me/creds-file-0123.json C.UTF-8-something-long Jane Q. Developer dvorak-programmer"
    assert redact(f"envKEYvalue-000111222 envTOKENvalue-333444555 {kept}") == f"…1222 …4555 {kept}"


def test_a_redacting_connection_stores_no_registered_secret(tmp_path: Path) -> None:
    register_secret("dbSECRETvalue-abcdef")
    conn = redacting_connection(str(tmp_path / "x.db"))
    conn.execute("CREATE TABLE t (a TEXT, b INTEGER)")
    conn.execute("INSERT INTO t VALUES (?, ?)", ["said dbSECRETvalue-abcdef", 1])
    conn.executemany("INSERT INTO t VALUES (:a, :b)", [{"a": "dbSECRETvalue-abcdef", "b": 2}])
    conn.commit()
    conn.close()
    assert b"dbSECRETvalue" not in (tmp_path / "x.db").read_bytes()
    rows = sqlite3.connect(tmp_path / "x.db").execute("SELECT a, b FROM t ORDER BY b").fetchall()
    assert rows == [("said …cdef", 1), ("…cdef", 2)]


def test_a_redacting_connection_binds_verbatim_text_as_it_is_but_nothing_made_from_it(tmp_path: Path) -> None:
    register_secret("vbSECRETvalue-123456")
    conn = redacting_connection(str(tmp_path / "x.db"))
    conn.execute("CREATE TABLE t (a TEXT, b INTEGER)")
    conn.execute("INSERT INTO t VALUES (?, ?)", [Verbatim("2026-03-01T10:00:00.123+00:00"), 1])
    conn.execute("INSERT INTO t VALUES (?, ?)", [Verbatim("at ") + "vbSECRETvalue-123456", 2])
    conn.execute("INSERT INTO t VALUES (?, ?)", (f"{Verbatim('at ')}vbSECRETvalue-123456", 3))
    conn.execute("INSERT INTO t VALUES (:a, :b)", {"a": Verbatim("vbSECRETvalue-123456 at ")[-3:] + "x", "b": 4})
    # The mark is a promise that nothing needs masking: kept to the executor's own words and times.
    conn.execute("INSERT INTO t VALUES (?, ?)", [Verbatim("vbSECRETvalue-123456"), 5])
    conn.commit()
    rows = conn.execute("SELECT a, b FROM t ORDER BY b").fetchall()
    conn.close()
    assert rows == [
        ("2026-03-01T10:00:00.123+00:00", 1),
        ("at …3456", 2),
        ("at …3456", 3),
        ("at x", 4),
        ("vbSECRETvalue-123456", 5),
    ]


def test_the_log_filter_redacts_messages_arguments_and_tracebacks(tmp_path: Path) -> None:
    register_secret("logSECRETvalue-778899")
    handler = logging.FileHandler(tmp_path / "x.log", encoding="utf-8")
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test_redaction.child")
    logger.addHandler(handler)
    try:
        logger.warning("agent said %s", "logSECRETvalue-778899")
        try:
            raise RuntimeError("failed with logSECRETvalue-778899")
        except RuntimeError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
        handler.close()
    text = (tmp_path / "x.log").read_text()
    assert "logSECRETvalue" not in text
    assert "agent said …8899" in text
    assert "RuntimeError: failed with …8899" in text


def test_a_writer_redacts_a_secret_that_arrives_in_pieces(tmp_path: Path) -> None:
    register_secret("streamedSECRETvalue-4242")
    path = tmp_path / "w.log"
    writer = RedactingWriter(path.open("w", encoding="utf-8"))
    for piece in ("reply: stream", "edSECRET", "value-4242 done\nlast ", "streamedSECRETvalue-4242"):
        writer.write(piece)
    writer.flush()
    assert path.read_text() == "reply: …4242 done\n"  # the unfinished line waits for its end
    writer.close()
    assert path.read_text() == "reply: …4242 done\nlast …4242"


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("OPENAI_API_KEY", True),
        ("ANTHROPIC_AUTH_TOKEN", True),
        ("DISCORD_WEBHOOK_URL", True),
        ("X-Api-Key", True),
        ("apiKey", True),
        ("Authorization", True),
        ("Cookie", True),
        ("GITHUB_PAT", True),
        ("GIT_AUTHOR_NAME", False),
        ("PWD", False),
        ("monkey", False),
        ("KEYBOARD", False),
        ("TOKENIZER_DIR", False),
    ],
)
def test_one_rule_says_which_names_hold_secrets(name: str, secret: bool) -> None:
    # The same rule registers a worker's env values, warns of literal secrets in the config and masks `config show`.
    assert is_secret_name(name) is secret


@pytest.mark.parametrize(
    "before",
    ["", " ", "(", "-", "/", '"', "\\n", "\\t", "é", "task-analysis.json and then ", "desk-lamp, "],
)
def test_a_key_shape_is_masked_whatever_stands_before_it_and_only_there(before: str) -> None:
    # The cheap test that lets most text skip the shape pattern must never skip a real one:
    # "task-analysis" holds "sk-" inside a word, and the key may come after it.
    key = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
    assert key not in redact(f"{before}{key} end")
    assert redact(f"{before}sk-{'a' * 3} end") == f"{before}sk-aaa end"
    for inside in ("task-", "xsk-", "_sk-", "9sk-"):
        text = f"{before}{inside}{key[3:]} end"
        assert redact(text) == text, text  # inside a word: not a key shape (and no lead)


@pytest.mark.parametrize("escaped", ["\t", "\n", "\r", "\b", "\f", "\u0001", "é"])
@pytest.mark.parametrize("ascii_only", [True, False])
def test_encoded_json_stays_decodable_and_masked_whatever_escape_stands_before_a_secret(escaped, ascii_only):
    # Agent output is stored inside JSON event payloads, redacted as encoded text.  A value
    # right after an escape ("token:\tvalue" encodes as token:\\tvalue) used to be masked with
    # the escape's letter, which left a lone backslash: an event that could not be read back.
    # A key shape right after \b, \f or \u0001 was not seen at all.
    for raw, secret in (
        (f"token:{escaped}abcDEF0123456789ghiJKL", "abcDEF0123456789ghiJKL"),
        (f"x{escaped}sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "AbCdEfGhIjKlMnOp"),
    ):
        if escaped == "é" and raw.startswith("token"):
            continue  # a letter glued to the value is not after the lead: not a credential's shape
        encoded = json.dumps({"out": raw}, ensure_ascii=ascii_only)
        redacted = redact(encoded)
        assert secret not in redacted, encoded
        assert "…" in json.loads(redacted)["out"], encoded


_LEAD_ALPHABET = "abceirsBCEIRS:=\"'\\ \t\nıİſK/_-.0123456789xyz"


@given(before=st.text(alphabet=_LEAD_ALPHABET, max_size=24))
@settings(max_examples=3000, deadline=None)
def test_the_cheap_look_before_a_value_never_rules_out_what_the_lead_pattern_finds(before: str) -> None:
    # _may_follow_a_lead skips _LEAD for most values (every path in a prompt): it may say yes
    # where _LEAD says no, never the other way round, or a key after "token: " goes unmasked.
    if _LEAD.search(before) is not None:
        assert _may_follow_a_lead(before + "x", len(before))


#: Pieces of leads and of what stands around them: every keyword, cut short too, in several
#: cases, with the non-ASCII letters (?i) folds to ASCII ones (dotless i, dotted I, long s, Kelvin sign).
_LEAD_PIECES = (
    "key", "KEY", "Key", "ke", "y", "api_", "api-", "apikey", "token", "TOKEN", "tok", "secret", "passwd",
    "password", "PASSW", "or", "d", "credential", "auth", "Authorization", "bearer", "Bearer", "basic",
    "BASIC", "bas", "ic", "s", "ı", "İ", "ſ", "\u212a", ":", "=", " ", "\t", "\n", '"', "'", "\\", "x", "1", "é", "/",
)  # fmt: skip


@given(pieces=st.lists(st.sampled_from(_LEAD_PIECES), max_size=10))
@settings(max_examples=4000, deadline=None)
def test_every_lead_of_an_ascii_text_ends_where_a_value_window_takes_it_in(pieces: list[str]) -> None:
    # _value_windows lets the look before each value skip all but a few places of a text (a
    # prompt's paths, a JSON line's values): wherever a lead ends, a value may start, so that
    # place must lie in a window, or a key after "token: " goes unmasked.
    text = "".join(pieces)
    if not text.isascii():
        return  # (?i) folds non-ASCII letters to ASCII ones: such text takes the whole look
    windows = _value_windows(text)
    for end in range(len(text) + 1):
        if _LEAD.search(text[max(0, end - 40) : end]):
            assert any(first <= end <= last for first, last in windows), (text, end)


#: Pieces of texts with leads, values (runs of 20 characters or more, a credential's shape or
#: not), runs too short for one, escapes and '=' endings, for the two looks to compare.
_TEXT_PIECES = (
    *(piece for piece in _LEAD_PIECES if piece.isascii()),
    "Zq3xW8vR2tY6uP0sN4mK7jH", "abcdefghijklmnopqrstuvwxyz", "/work/project/artifacts/T-000123.md", "a1b2c3d4e5",
    "==", "=", "\\t", "\\n", "\\u00e9", ",", "{", '":"', "Key files:", "author", "x" * 30, "0123456789",
    " " * 9, "\t" * 4,  # a lead may stretch to the 40th character before its value
)  # fmt: skip


@given(pieces=st.lists(st.sampled_from(_TEXT_PIECES), max_size=14))
@settings(max_examples=5000, deadline=None)
def test_looking_only_in_the_windows_masks_what_the_whole_look_masks(pieces: list[str]) -> None:
    text = "".join(pieces)
    assert _mask_in_windows(text, _value_windows(text)) == _mask_after_lead(text), text


def test_a_json_line_without_a_secret_like_name_has_no_window_and_one_with_it_is_masked() -> None:
    line = '{"type":"text","session_id":"3f1c2a9e-8b7d-4e2a-9c1f-0a2b3c4d5e6f","path":"src/app/handlers/profile.py"}'
    assert _value_windows(line) == []
    assert redact(line) == line
    leaky = line.replace("session_id", "session_token")
    assert _value_windows(leaky)
    assert "3f1c2a9e-8b7d-4e2a-9c1f-0a2b3c4d5e6f" not in redact(leaky)


def test_a_value_far_from_its_lead_word_or_begun_before_the_window_is_looked_at_as_the_whole_look_does() -> None:
    # The lead must fit in the 40 characters before the value: a value further on is no
    # secret's; a run that begins before the window and reaches into it is not its value.
    key = "Zq3xW8vR2tY6uP0sN4mK7jH"
    near = f"token:      {key}"
    far = "token:" + " " * 40 + key
    inside_a_run = f"abc{'x' * 30}token={key}"
    for text in (near, far, inside_a_run, f"{near} and {near}"):
        assert _mask_in_windows(text, _value_windows(text)) == _mask_after_lead(text), text
    assert key not in redact(near)
    assert key in redact(far)
    # The window's last place: the lead's word at the 40th character before the value.
    at_the_edge = "key:" + " " * 36 + key
    for text in (at_the_edge, " " + at_the_edge[1:], at_the_edge.replace(":", ": ", 1)):
        assert _mask_in_windows(text, _value_windows(text)) == _mask_after_lead(text), text
    assert key not in redact(at_the_edge)
    assert key in redact(at_the_edge.replace(":", ": ", 1))


def test_a_value_after_a_lead_is_masked_and_a_path_in_running_text_is_not() -> None:
    key = "Zq3xW8vR2tY6uP0sN4mK7jH"
    for lead in ("token: ", "api_key=", '"password": "', "Authorization: Bearer ", "BASİC ", "secret:\\t"):
        assert key not in redact(f"{lead}{key}"), lead
    path = "/work/project/artifacts/T-000123-analysis.md"
    assert redact(f"read {path} first: it lists 12 files") == f"read {path} first: it lists 12 files"


def test_no_letter_but_r_and_c_ends_a_bearer_or_basic_lead() -> None:
    # What _may_follow_a_lead relies on: (?i) folds the long s to "s" and the dotted I to "i", no letter to "r" or "c".
    folds = re.compile("(?i)[rc]")
    assert [chr(code) for code in range(0x110000) if folds.fullmatch(chr(code))] == ["C", "R", "c", "r"]
