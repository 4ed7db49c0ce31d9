"""An API key held so that it cannot leak.

:class:`Secret` is shown only as ``provider…last4``; :class:`ApiKey` is one usable key
and where it came from.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
)
from pydantic_core import core_schema

from session.config_fields import Tier
from session.redaction import mask, register_secret

__all__ = [
    "ApiKey",
    "Secret",
]


class Secret:
    """An API key.  Shown only as ``provider…last4`` (``anthropic…3f9a``): in ``repr``,
    ``str``, f-strings, and when a model holding it is dumped or serialised.

    :meth:`reveal` is the one way to the value; call it where the key is handed to
    a backend, and nowhere else.  Equality compares values in constant time.
    """

    __slots__ = ("_value", "provider")

    def __init__(self, provider: str, value: str) -> None:
        self.provider = provider
        self._value = value
        register_secret(value)  # whatever prints it from now on masks it

    def reveal(self) -> str:
        """The key itself."""
        return self._value

    @property
    def last4(self) -> str:
        """The last 4 characters, or ``""`` for a key too short to show any."""
        return mask(self._value)[1:]

    @property
    def fingerprint(self) -> str:
        """A stable, non-reversible id for this key (12 hex digits of its SHA-256): for usage tables."""
        return hashlib.sha256(self._value.encode()).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"{self.provider}{mask(self._value)}"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return self.provider == other.provider and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash((self.provider, self._value))

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __reduce__(self) -> Any:
        # Pickling would carry the value; nothing of ours needs to pickle a key.
        raise TypeError("a Secret is not picklable")

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.is_instance_schema(
            cls, serialization=core_schema.plain_serializer_function_ser_schema(repr, when_used="always")
        )


class ApiKey(BaseModel):
    """One usable key: its provider, the key (a :class:`Secret`), its tier when known, and where it came from.

    ``origin`` is ``env:NAME`` for a key read from an environment variable, or the
    path of the ``hydra_keys.json`` that holds it.
    """

    model_config = ConfigDict(frozen=True)

    provider: str
    secret: Secret
    tier: Tier | None = None
    origin: str
