"""Which of an agent's output lines are progress lines: every JSON object whose "type" is
"progress", however it is written, and nothing else."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from backends._agent_process import parse_progress


def _written(word: str, escaped: list[bool]) -> str:
    """``word`` as a JSON string's body, each letter \\u-escaped where ``escaped`` says so."""
    return "".join(f"\\u{ord(letter):04x}" if escape else letter for letter, escape in zip(word, escaped, strict=False))


_TYPES = st.sampled_from(["progress", "Progress", "progres", "assistant", "result", "progress "])


@given(
    kind=_TYPES,
    escaped=st.lists(st.booleans(), min_size=9, max_size=9),
    percent=st.integers(-5, 120),
    extra=st.dictionaries(st.sampled_from(["usage", "note", "input_tokens", "id"]), st.text(max_size=12), max_size=3),
    encoding=st.sampled_from(["utf-8", "utf-8", "utf-16-le", "utf-32-le"]),
)
@settings(max_examples=1500, deadline=None)
def test_a_line_is_progress_exactly_when_its_type_decodes_to_progress(
    kind: str, escaped: list[bool], percent: int, extra: dict[str, str], encoding: str
) -> None:
    # The cheap look before the parse (is "progress" there at all?) must never drop a
    # progress line, written with escapes or in an encoding json.loads also reads.
    body = json.dumps({**extra, "percent": percent})[1:-1]
    text = "{" + f'"type": "{_written(kind, escaped)}"' + (", " + body if body else "") + "}"
    line = text.encode(encoding)
    assert (parse_progress(line) is not None) == (json.loads(line).get("type") == "progress"), text


def test_a_claude_stream_line_with_token_counts_is_not_progress_and_a_progress_line_is() -> None:
    line = json.dumps(
        {
            "type": "assistant",
            "message": {"content": [{"type": "tool_use", "name": "Read"}], "usage": {"input_tokens": 4}},
        }
    ).encode()
    assert parse_progress(line) is None
    assert parse_progress(b'  {"type": "progress", "percent": 140, "note": "tests pass"}\r') == (100, "tests pass")
    assert parse_progress(b'{"type": "progr\\u0065ss", "percent": 7}') == (7, "")
