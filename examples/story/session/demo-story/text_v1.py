"""Text helpers."""

import unicodedata


def word_count(text: str) -> int:
    """The number of whitespace-separated words in ``text``."""
    return len(text.split())


def slugify(text: str, separator: str = "-") -> str:
    """A lowercase ASCII slug of ``text``: "Héllo, World!" -> "hello-world"."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "".join(char if char.isalnum() else separator for char in ascii_text.lower()).strip(separator)
