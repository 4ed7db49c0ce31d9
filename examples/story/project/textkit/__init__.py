"""textkit: small text helpers."""

from textkit.text import word_count

__all__ = ["word_count"]
