"""textkit: small text helpers."""

from textkit.text import slugify, word_count

__all__ = ["slugify", "word_count"]
