"""Keys added at run time (``executor keys add``), stored encrypted in ``<user config>/keys.enc``.

The file is a small JSON envelope around one Fernet token (AES-128-CBC + HMAC-SHA256,
from ``cryptography``); the token holds the keys.  It is written atomically
(:func:`session.projection.write_atomic`) with mode 0600, under an exclusive lock so
two ``executor keys add`` at once lose nothing.

The master secret comes from, in this order:

1. ``TEAM_EXECUTOR_MASTER_KEY`` when set — an explicit choice wins.  A Fernet key
   (``Fernet.generate_key()``: 44 url-safe base64 characters) is used as it is; any
   other value is a passphrase, stretched with scrypt and a random salt stored in
   the file;
2. the OS keyring (``keyring``, service ``team-executor``) when a backend is usable:
   a Fernet key made on the first ``add`` and kept there;
3. nothing: keys are held in this process's memory only (``persistent`` is False and
   ``warning`` says so; the CLI prints it).

A wrong master secret, or a file whose secret is nowhere to be found, is a
:class:`KeyStoreError` that says which and how to fix it — never an empty store.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import contextlib
import fcntl
import json
import os
import re
import secrets as token_source
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from session import keypool
from session.config_fields import TIERS
from session.projection import write_atomic
from session.secret import ApiKey, Secret
from session.skills import user_config_dir

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

__all__ = [
    "KEYRING_SERVICE",
    "KEYRING_USERNAME",
    "KEYS_FILE",
    "MASTER_KEY_ENV",
    "InvalidKey",
    "KeyStore",
    "KeyStoreError",
    "MasterSource",
    "StoredKey",
    "validate_key",
]

KEYS_FILE = "keys.enc"
MASTER_KEY_ENV = "TEAM_EXECUTOR_MASTER_KEY"
KEYRING_SERVICE = "team-executor"
KEYRING_USERNAME = "master-key"
_FORMAT = "team-executor-keys"
_VERSION = 1
_SCRYPT = {"n": 2**15, "r": 8, "p": 1}
_MIN_PASSPHRASE = 8
_MIN_KEY = 8
_MAX_FILE_BYTES = 4 << 20
_PROVIDER = re.compile(r"[a-z0-9][a-z0-9._-]*")

#: Where the master secret came from: the environment (a Fernet key or a passphrase),
#: the OS keyring, or nowhere (memory only).
MasterSource = Literal["env-key", "env-passphrase", "keyring", "memory"]

_AUTO: Any = object()


class KeyStoreError(Exception):
    """The key store cannot be used as asked; the message names the file and the fix."""


class InvalidKey(KeyStoreError, ValueError):
    """A provider name, key or tier that cannot be stored; the message says why (never the key)."""


def validate_key(provider: str, key: str, tier: str | None = None) -> tuple[str, str, str | None]:
    """``(provider, key, tier)`` cleaned up (stripped; tier upper case), or :class:`InvalidKey`."""
    provider = provider.strip()
    value = key.strip()
    if not _PROVIDER.fullmatch(provider):
        raise InvalidKey(
            f"provider {provider!r} is not a provider name; fix: use a lower-case name such as "
            "anthropic, openai, google, openai-compatible"
        )
    if len(value) < _MIN_KEY or any(char.isspace() for char in value):
        raise InvalidKey(
            f"that is not an API key (shorter than {_MIN_KEY} characters, or it contains white space); "
            "fix: pass the whole key, on one line"
        )
    if tier is not None:
        tier = tier.strip().upper()
        if tier not in TIERS:
            raise InvalidKey(f"tier {tier!r} is not one of {', '.join(TIERS)}; fix: use one of those")
    return provider, value, tier


class StoredKey(NamedTuple):
    """What ``executor keys list`` shows of a stored key.  Never the key."""

    key_id: str
    provider: str
    tier: str | None
    last4: str


class _Entry(NamedTuple):
    provider: str
    value: str
    tier: str | None
    added_at: str


def _is_fernet_key(value: str) -> bool:
    try:
        return len(base64.urlsafe_b64decode(value.encode("ascii"))) == 32 and len(value) == 44
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return False


def _fernet(key: bytes) -> Fernet:
    # cryptography (~15 ms to import) loads when a store is opened with a key: a run without
    # keys.enc never opens one.
    from cryptography.fernet import Fernet  # noqa: PLC0415

    return Fernet(key)


def _derive(passphrase: str, salt: bytes, params: Mapping[str, int]) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt  # noqa: PLC0415 - see _fernet

    kdf = Scrypt(salt=salt, length=32, n=params["n"], r=params["r"], p=params["p"])
    return base64.urlsafe_b64encode(kdf.derive(passphrase.encode("utf-8")))


def _usable_keyring() -> Any:
    """The OS keyring backend when one can really store secrets, else None."""
    try:
        import keyring  # noqa: PLC0415 - slow to import (entry points); only the key store needs it
        from keyring.backends import fail, null  # noqa: PLC0415

        backend = keyring.get_keyring()
    except Exception:  # noqa: BLE001 - a broken keyring installation means: no keyring
        return None
    if isinstance(backend, fail.Keyring | null.Keyring) or getattr(backend, "priority", 0) <= 0:
        return None
    return backend


class KeyStore:
    """The encrypted store of keys added at run time.  Open it with :meth:`open`."""

    def __init__(
        self, path: Path, source: MasterSource, fernet: Fernet | None, envelope: dict[str, Any], keyring: Any
    ) -> None:
        self.path = path
        self.source: MasterSource = source
        self._fernet = fernet
        self._envelope = envelope  # how the file's key is derived (kdf, salt); kept on rewrite
        self._keyring = keyring
        self._memory: list[_Entry] = []

    # --- opening ---------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        config_dir: Path | None = None,
        environ: Mapping[str, str] | None = None,
        keyring_backend: Any = _AUTO,
    ) -> KeyStore:
        """Open the store in ``config_dir`` (default :func:`~session.skills.user_config_dir`).

        ``environ`` (default ``os.environ``) is where ``TEAM_EXECUTOR_MASTER_KEY`` is read;
        ``keyring_backend`` is an object with ``get_password``/``set_password`` (default:
        the OS keyring when usable; ``None``: no keyring).  Reads and decrypts the file
        now, so a wrong secret is reported here.  Raises :class:`KeyStoreError`.
        """
        folder = Path(config_dir) if config_dir is not None else user_config_dir()
        env = os.environ if environ is None else environ
        path = folder / KEYS_FILE
        envelope = cls._read_envelope(path)
        passphrase = env.get(MASTER_KEY_ENV, "").strip()
        if passphrase:
            store = cls._from_env(path, passphrase, envelope)
        else:
            backend = _usable_keyring() if keyring_backend is _AUTO else keyring_backend
            store = cls._from_keyring(path, backend, envelope)
        if envelope is not None:
            store._decrypt_entries(envelope)  # a wrong secret fails now, not at the first use
        return store

    @classmethod
    def _from_env(cls, path: Path, passphrase: str, envelope: dict[str, Any] | None) -> KeyStore:
        kdf = envelope.get("kdf") if envelope is not None else ("none" if _is_fernet_key(passphrase) else "scrypt")
        if kdf == "scrypt":
            if len(passphrase) < _MIN_PASSPHRASE:
                raise KeyStoreError(
                    f"{MASTER_KEY_ENV} is too short for a passphrase (fewer than {_MIN_PASSPHRASE} characters); "
                    'fix: use a long passphrase, or a Fernet key: python -c "from cryptography.fernet import Fernet; '
                    'print(Fernet.generate_key().decode())"'
                )
            if envelope is not None:
                salt, params = cls._scrypt_params(path, envelope)
            else:
                salt, params = token_source.token_bytes(16), dict(_SCRYPT)
            fresh = {"kdf": "scrypt", "salt": base64.b64encode(salt).decode(), "scrypt": params}
            return cls(path, "env-passphrase", _fernet(_derive(passphrase, salt, params)), fresh, None)
        if not _is_fernet_key(passphrase):
            written_with = envelope.get("master") if envelope is not None else None
            raise KeyStoreError(
                f"cannot decrypt {path}: it was written with {_describe(written_with)}, and the {MASTER_KEY_ENV} "
                f"set now is not a Fernet key (44 url-safe base64 characters); fix: set {MASTER_KEY_ENV} to the "
                "secret it was written with, or unset it to use the OS keyring"
            )
        return cls(path, "env-key", _fernet(passphrase.encode("ascii")), {"kdf": "none"}, None)

    @classmethod
    def _from_keyring(cls, path: Path, backend: Any, envelope: dict[str, Any] | None) -> KeyStore:
        written_with = envelope.get("master") if envelope is not None else None
        if backend is None:
            if envelope is not None:
                raise KeyStoreError(
                    f"{path} holds encrypted keys but no master secret is available "
                    f"(it was written with {_describe(written_with)}; {MASTER_KEY_ENV} is not set "
                    f"and no OS keyring is usable); fix: set {MASTER_KEY_ENV} to the secret it was written with, "
                    f"or delete {path} to start over (its keys are lost)"
                )
            return cls(path, "memory", None, {"kdf": "none"}, None)
        try:
            master = backend.get_password(KEYRING_SERVICE, KEYRING_USERNAME)
        except Exception as error:  # noqa: BLE001 - keyring backends raise their own types (locked, no D-Bus, ...)
            raise KeyStoreError(
                f"the OS keyring could not be read ({type(error).__name__}: {error}); fix: unlock the keyring, "
                f"or set {MASTER_KEY_ENV} to use a master secret from the environment instead"
            ) from None
        if master is None:
            if envelope is not None:
                raise KeyStoreError(
                    f"{path} holds encrypted keys but the OS keyring has no '{KEYRING_SERVICE}' master key "
                    f"(the file was written with {_describe(written_with)}); fix: set {MASTER_KEY_ENV} "
                    f"to the secret it was written with, or delete {path} to start over (its keys are lost)"
                )
            return cls(path, "keyring", None, {"kdf": "none"}, backend)  # a master key is made at the first add
        if not _is_fernet_key(master):
            raise KeyStoreError(
                f"the OS keyring's '{KEYRING_SERVICE}' entry is not a Fernet key; fix: delete that keyring entry "
                f"and {path} to start over, or set {MASTER_KEY_ENV}"
            )
        return cls(path, "keyring", _fernet(master.encode("ascii")), {"kdf": "none"}, backend)

    @staticmethod
    def _scrypt_params(path: Path, envelope: Mapping[str, Any]) -> tuple[bytes, dict[str, int]]:
        try:
            salt = base64.b64decode(envelope["salt"], validate=True)
            params = {name: int(envelope["scrypt"][name]) for name in ("n", "r", "p")}
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise KeyStoreError(
                f"{path} is damaged (its scrypt salt or parameters cannot be read); "
                f"fix: delete {path} and add the keys again"
            ) from None
        if not (2 <= params["n"] <= 2**20 and 1 <= params["r"] <= 32 and 1 <= params["p"] <= 16):
            raise KeyStoreError(f"{path} is damaged (scrypt parameters out of range); fix: delete it and add again")
        return salt, params

    @staticmethod
    def _read_envelope(path: Path) -> dict[str, Any] | None:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        except OSError as error:
            raise KeyStoreError(f"{path}: cannot read ({error.strerror}); fix: check its permissions") from None
        if size == 0:  # the 0600 placeholder of a first write that did not finish: nothing stored
            return None
        damaged = f"{path} is not a team-executor key store; fix: move it away (or delete it) and add the keys again"
        if size > _MAX_FILE_BYTES:
            raise KeyStoreError(damaged)
        try:
            data = json.loads(path.read_bytes())
        except OSError as error:
            raise KeyStoreError(f"{path}: cannot read ({error.strerror}); fix: check its permissions") from None
        except ValueError:
            raise KeyStoreError(damaged) from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("token"), str):
            raise KeyStoreError(damaged)
        if data.get("version") != _VERSION:
            raise KeyStoreError(
                f"{path} has format version {data.get('version')!r}; this executor reads {_VERSION}; "
                "fix: use the executor that wrote it"
            )
        return data

    # --- what the store says about itself --------------------------------------------

    @property
    def persistent(self) -> bool:
        """False when keys live in this process's memory only."""
        return self.source != "memory"

    @property
    def warning(self) -> str | None:
        """Why keys are not saved (memory-only mode), for the user; None when they are."""
        if self.persistent:
            return None
        return (
            "no master secret: the key is held in memory for this process only and is NOT saved "
            f"(set {MASTER_KEY_ENV} to a passphrase or a Fernet key, or install an OS keyring, "
            "to store keys encrypted)"
        )

    # --- reading and writing ----------------------------------------------------------

    def _decrypt_entries(self, envelope: Mapping[str, Any]) -> list[_Entry]:
        if self._fernet is None:  # open() never gets here without one; a clear error all the same
            raise KeyStoreError(f"{self.path} holds encrypted keys but no master secret is available")
        from cryptography.fernet import InvalidToken  # noqa: PLC0415 - see _fernet

        try:
            plain = self._fernet.decrypt(envelope["token"].encode("ascii"))
        except (InvalidToken, UnicodeEncodeError):
            raise KeyStoreError(
                f"cannot decrypt {self.path}: the master secret from {_describe(self.source)} is not the one it "
                f"was written with (that came from {_describe(envelope.get('master'))}); fix: set {MASTER_KEY_ENV} "
                f"to the secret it was written with, or delete {self.path} to start over (its keys are lost)"
            ) from None
        try:
            rows = json.loads(plain)["keys"]
            return [_Entry(row["provider"], row["key"], row.get("tier"), row.get("added_at", "")) for row in rows]
        except (ValueError, KeyError, TypeError):
            raise KeyStoreError(
                f"{self.path} decrypts but its content is damaged; fix: delete it and add the keys again"
            ) from None

    def _entries(self) -> list[_Entry]:
        if not self.persistent:
            return list(self._memory)
        envelope = self._read_envelope(self.path)
        if envelope is None:
            return []
        if self._fernet is None and self._keyring is not None:
            # another process wrote the first key since this store was opened: its master key is in the keyring now
            with contextlib.suppress(Exception):
                master = self._keyring.get_password(KEYRING_SERVICE, KEYRING_USERNAME)
                if master is not None and _is_fernet_key(master):
                    self._fernet = _fernet(master.encode("ascii"))
        return self._decrypt_entries(envelope)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if not self.persistent:
            yield
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            descriptor = os.open(self.path.with_name(KEYS_FILE + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise KeyStoreError(
                f"cannot write in {self.path.parent} ({error.strerror}); fix: check the folder's permissions, "
                "or point TEAM_EXECUTOR_CONFIG_DIR at a writable folder"
            ) from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    def _save(self, entries: list[_Entry]) -> None:
        if not self.persistent:
            self._memory = entries
            return
        if self._fernet is None:  # keyring mode, first write: make the master key and keep it in the keyring
            from cryptography.fernet import Fernet  # noqa: PLC0415 - see _fernet

            master = Fernet.generate_key()
            try:
                self._keyring.set_password(KEYRING_SERVICE, KEYRING_USERNAME, master.decode("ascii"))
            except Exception as error:  # noqa: BLE001 - keyring backends raise their own types
                raise KeyStoreError(
                    f"the OS keyring refused to store the master key ({type(error).__name__}: {error}); "
                    f"fix: unlock the keyring, or set {MASTER_KEY_ENV}"
                ) from None
            self._fernet = _fernet(master)
        rows = [
            {"provider": entry.provider, "key": entry.value, "tier": entry.tier, "added_at": entry.added_at}
            for entry in entries
        ]
        plain = json.dumps({"keys": rows}).encode()
        body = {
            "format": _FORMAT,
            "version": _VERSION,
            "master": self.source,
            **self._envelope,
            "token": self._fernet.encrypt(plain).decode("ascii"),
        }
        data = (json.dumps(body, indent=1) + "\n").encode()
        try:
            if not self.path.exists():  # write_atomic keeps an existing file's mode: make it 0600 first
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.chmod(self.path, 0o600)
            write_atomic(self.path, data)
        except OSError as error:
            raise KeyStoreError(
                f"cannot write {self.path} ({error.strerror}); fix: check the folder's permissions"
            ) from None

    # --- the API -----------------------------------------------------------------------

    def add(self, provider: str, key: str, tier: str | None = None) -> str:
        """Store ``key`` for ``provider`` (again: its tier is updated); returns its id.

        Raises :class:`InvalidKey` for a bad provider, key or tier, :class:`KeyStoreError` when it cannot be written.
        """
        provider, value, tier = validate_key(provider, key, tier)
        secret = Secret(provider, value)
        with self._locked():
            entries = [entry for entry in self._entries() if Secret(entry.provider, entry.value) != secret]
            entries.append(_Entry(provider, value, tier, datetime.now(UTC).isoformat(timespec="seconds")))
            self._save(entries)
        return keypool.key_id(secret)

    def remove(self, key_id: str) -> bool:
        """Remove the key with this id; False when there is none."""
        with self._locked():
            entries = self._entries()
            kept = [entry for entry in entries if keypool.key_id(Secret(entry.provider, entry.value)) != key_id]
            if len(kept) == len(entries):
                return False
            self._save(kept)
        return True

    def list(self) -> list[StoredKey]:
        """Every stored key as (id, provider, tier, last 4 characters)."""
        return [
            StoredKey(keypool.key_id(secret), entry.provider, entry.tier, secret.last4)
            for entry in self._entries()
            for secret in (Secret(entry.provider, entry.value),)
        ]

    def secrets(self) -> builtins.list[ApiKey]:  # `list` in this class is the method above
        """Every stored key, ready for the key pool (:func:`session.keypool.pool_from_config`)."""
        origin = "keystore" if self.persistent else "memory"
        return [
            ApiKey(provider=entry.provider, secret=Secret(entry.provider, entry.value), tier=entry.tier, origin=origin)
            for entry in self._entries()
        ]


def _describe(source: object) -> str:
    return {
        "env-key": f"a Fernet key in {MASTER_KEY_ENV}",
        "env-passphrase": f"a passphrase in {MASTER_KEY_ENV}",
        "keyring": "the OS keyring",
        "memory": "nowhere",
    }.get(str(source), "an unknown source")
