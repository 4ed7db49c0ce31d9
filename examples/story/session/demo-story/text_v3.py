"""Text helpers."""

import re
import unicodedata


def word_count(text: str) -> int:
    """The number of whitespace-separated words in ``text``."""
    return len(text.split())


def slugify(text: str, separator: str = "-", max_length: int | None = None) -> str:
    """A lowercase ASCII slug of ``text``: "Héllo, World!" -> "hello-world".

    With ``max_length``, the slug is cut at the last separator that fits, so no word is cut in half.
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", separator, ascii_text.lower()).strip(separator)
    if max_length is None or len(slug) <= max_length:
        return slug
    cut = slug[: max_length + 1].rpartition(separator)[0]
    return cut or slug[:max_length]
