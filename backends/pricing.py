"""List prices per million tokens, to estimate a cost the agent does not report.

Codex and Gemini CLI report tokens but no cost; Claude Code reports its own.
Prices are the providers' published list prices for the model families (USD
per 1M tokens: input, output, cached input) and are matched by the longest
model-name prefix.  A model we do not know gets no estimate rather than a
wrong one.  Issue 5 moves this table into the validated configuration.
"""

from __future__ import annotations

__all__ = ["PRICES", "estimate_cost"]

PRICES: dict[str, tuple[float, float, float]] = {
    "claude-opus-4": (15.0, 75.0, 1.5),
    "claude-sonnet-4": (3.0, 15.0, 0.3),
    "claude-3-7-sonnet": (3.0, 15.0, 0.3),
    "claude-haiku-4": (1.0, 5.0, 0.1),
    "claude-3-5-haiku": (0.8, 4.0, 0.08),
    "gpt-5-mini": (0.25, 2.0, 0.025),
    "gpt-5-nano": (0.05, 0.4, 0.005),
    "gpt-5": (1.25, 10.0, 0.125),
    "gpt-4.1-mini": (0.4, 1.6, 0.1),
    "gpt-4.1": (2.0, 8.0, 0.5),
    "o4-mini": (1.1, 4.4, 0.275),
    "gemini-2.5-pro": (1.25, 10.0, 0.31),
    "gemini-2.5-flash-lite": (0.1, 0.4, 0.025),
    "gemini-2.5-flash": (0.3, 2.5, 0.075),
    "qwen3-coder": (0.45, 1.8, 0.045),
}


def estimate_cost(model: str, tokens_in: int, tokens_out: int, tokens_cached: int = 0) -> float | None:
    """USD for one attempt, or None for a model without a known price.

    ``tokens_in`` includes the cached tokens (as the providers count them).
    """
    name = model.lower().rsplit("/", 1)[-1]
    matches = [prefix for prefix in PRICES if name.startswith(prefix)]
    if not matches:
        return None
    price_in, price_out, price_cached = PRICES[max(matches, key=len)]
    fresh = max(0, tokens_in - tokens_cached)
    return round((fresh * price_in + tokens_cached * price_cached + tokens_out * price_out) / 1_000_000, 6)
