"""The encrypted key store: master secret sources, round trips, wrong secrets, memory-only mode, the file."""

from __future__ import annotations

import json
import stat
import threading

import pytest
from cryptography.fernet import Fernet

from session.keypool import key_id
from session.keystore import (
    KEYRING_SERVICE,
    KEYRING_USERNAME,
    KEYS_FILE,
    MASTER_KEY_ENV,
    InvalidKey,
    KeyStore,
    KeyStoreError,
    StoredKey,
)
from session.secret import Secret

OPENAI = "sk-proj-TESTkeyOPENAI0123456789-wxyz"
ANTHROPIC = "sk-ant-api03-TESTkeyANTHROPIC-9876"
PASSPHRASE = "correct horse battery staple"


class FakeKeyring:
    """An in-memory stand-in for an OS keyring backend (the tests must not touch the real one)."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password


class LockedKeyring(FakeKeyring):
    def get_password(self, service: str, username: str) -> str | None:
        raise RuntimeError("the keyring is locked")


def open_store(folder, master: str | None = None, keyring=None) -> KeyStore:
    environ = {} if master is None else {MASTER_KEY_ENV: master}
    return KeyStore.open(folder, environ, keyring_backend=keyring)


def assert_no_clear_keys(folder) -> None:
    for path in folder.iterdir():
        data = path.read_bytes()
        for value in (OPENAI, ANTHROPIC):
            assert value.encode() not in data, path.name


@pytest.mark.parametrize("master", [PASSPHRASE, Fernet.generate_key().decode()], ids=["passphrase", "fernet-key"])
def test_round_trip_with_the_master_key_from_the_environment(tmp_path, master):
    store = open_store(tmp_path, master)
    assert store.persistent
    assert store.warning is None
    assert store.source == ("env-passphrase" if master == PASSPHRASE else "env-key")
    first = store.add("openai", OPENAI, "premium")
    second = store.add("anthropic", f"  {ANTHROPIC}\n")
    assert first == key_id(Secret("openai", OPENAI))
    assert second == key_id(Secret("anthropic", ANTHROPIC))

    reopened = open_store(tmp_path, master)
    assert reopened.list() == [
        StoredKey(first, "openai", "PREMIUM", OPENAI[-4:]),
        StoredKey(second, "anthropic", None, ANTHROPIC[-4:]),
    ]
    secrets = reopened.secrets()
    assert [key.secret.reveal() for key in secrets] == [OPENAI, ANTHROPIC]
    assert [key.origin for key in secrets] == ["keystore", "keystore"]
    assert secrets[0].tier == "PREMIUM"
    assert OPENAI not in repr(secrets)
    assert_no_clear_keys(tmp_path)


def test_the_file_is_0600_and_holds_no_key_in_clear(tmp_path):
    store = open_store(tmp_path, PASSPHRASE)
    store.add("openai", OPENAI)
    path = tmp_path / KEYS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    envelope = json.loads(path.read_text())
    assert envelope["format"] == "team-executor-keys"
    assert envelope["kdf"] == "scrypt"
    assert PASSPHRASE not in path.read_text()
    store.add("anthropic", ANTHROPIC)  # a rewrite keeps the mode
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert_no_clear_keys(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_loosened_file_mode_is_tightened_again(tmp_path):
    store = open_store(tmp_path, PASSPHRASE)
    store.add("openai", OPENAI)
    (tmp_path / KEYS_FILE).chmod(0o644)
    store.add("anthropic", ANTHROPIC)
    assert stat.S_IMODE((tmp_path / KEYS_FILE).stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("written", "read"),
    [
        (PASSPHRASE, "another passphrase entirely"),
        (Fernet.generate_key().decode(), Fernet.generate_key().decode()),
        (Fernet.generate_key().decode(), "a passphrase this time"),
    ],
    ids=["passphrase", "fernet-key", "key-then-passphrase"],
)
def test_a_wrong_master_secret_is_a_clear_error_never_an_empty_store(tmp_path, written, read):
    open_store(tmp_path, written).add("openai", OPENAI)
    with pytest.raises(KeyStoreError) as caught:
        open_store(tmp_path, read)
    message = str(caught.value)
    assert "cannot decrypt" in message
    assert "fix:" in message
    assert str(tmp_path / KEYS_FILE) in message
    for secret in (OPENAI, written, read):
        assert secret not in message
    assert open_store(tmp_path, written).list()[0].provider == "openai"  # nothing was lost


def test_a_stored_file_without_any_master_secret_is_an_error(tmp_path):
    open_store(tmp_path, PASSPHRASE).add("openai", OPENAI)
    with pytest.raises(KeyStoreError, match=f"no master secret is available.*{MASTER_KEY_ENV}"):
        open_store(tmp_path, None, keyring=None)


def test_memory_only_mode_is_reported_and_writes_nothing(tmp_path):
    store = open_store(tmp_path, None, keyring=None)
    assert not store.persistent
    assert store.source == "memory"
    assert "memory" in store.warning
    assert MASTER_KEY_ENV in store.warning
    ident = store.add("openai", OPENAI)
    assert store.list() == [StoredKey(ident, "openai", None, OPENAI[-4:])]
    assert store.secrets()[0].origin == "memory"
    assert store.remove(ident)
    assert store.list() == []
    assert list(tmp_path.iterdir()) == []
    assert open_store(tmp_path, None, keyring=None).list() == []  # another process sees nothing


def test_keyring_mode_keeps_the_master_key_in_the_keyring(tmp_path):
    keyring = FakeKeyring()
    store = open_store(tmp_path, None, keyring=keyring)
    assert store.source == "keyring"
    assert store.persistent
    assert keyring.entries == {}  # nothing is made before the first key
    store.add("openai", OPENAI)
    master = keyring.entries[(KEYRING_SERVICE, KEYRING_USERNAME)]
    assert master not in (tmp_path / KEYS_FILE).read_text()
    assert [key.secret.reveal() for key in open_store(tmp_path, None, keyring=keyring).secrets()] == [OPENAI]
    # the same master key given through the environment opens the file too
    assert open_store(tmp_path, master).list()[0].provider == "openai"
    with pytest.raises(KeyStoreError, match="OS keyring has no"):
        open_store(tmp_path, None, keyring=FakeKeyring())
    with pytest.raises(KeyStoreError, match=r"could not be read.*locked"):
        open_store(tmp_path, None, keyring=LockedKeyring())


def test_the_environment_wins_over_the_keyring(tmp_path):
    keyring = FakeKeyring()
    store = open_store(tmp_path, PASSPHRASE, keyring=keyring)
    store.add("openai", OPENAI)
    assert store.source == "env-passphrase"
    assert keyring.entries == {}


def test_remove_and_add_again(tmp_path):
    store = open_store(tmp_path, PASSPHRASE)
    ident = store.add("openai", OPENAI, "STANDARD")
    assert store.add("openai", OPENAI, "PREMIUM") == ident  # the same key: one entry, tier updated
    assert store.list() == [StoredKey(ident, "openai", "PREMIUM", OPENAI[-4:])]
    assert not store.remove("openai-000000000000")
    assert store.remove(ident)
    assert open_store(tmp_path, PASSPHRASE).list() == []


@pytest.mark.parametrize(
    ("provider", "key", "tier", "match"),
    [
        ("OpenAI!", OPENAI, None, "not a provider name"),
        ("openai", "sk-1", None, "not an API key"),
        ("openai", "sk-proj-two words-here", None, "white space"),
        ("openai", OPENAI, "GOLD", "tier 'GOLD'"),
    ],
)
def test_bad_input_is_refused_without_echoing_the_key(tmp_path, provider, key, tier, match):
    store = open_store(tmp_path, PASSPHRASE)
    with pytest.raises(InvalidKey, match=match) as caught:
        store.add(provider, key, tier)
    assert key not in str(caught.value)
    assert not (tmp_path / KEYS_FILE).exists()


def test_a_damaged_file_is_a_clear_error(tmp_path):
    (tmp_path / KEYS_FILE).write_text("{not json")
    with pytest.raises(KeyStoreError, match="not a team-executor key store"):
        open_store(tmp_path, PASSPHRASE)
    (tmp_path / KEYS_FILE).write_text(json.dumps({"format": "team-executor-keys", "version": 99, "token": "x"}))
    with pytest.raises(KeyStoreError, match="format version 99"):
        open_store(tmp_path, PASSPHRASE)


def test_an_empty_placeholder_file_counts_as_no_store(tmp_path):
    (tmp_path / KEYS_FILE).write_bytes(b"")
    store = open_store(tmp_path, PASSPHRASE)
    assert store.list() == []
    store.add("openai", OPENAI)
    assert open_store(tmp_path, PASSPHRASE).list()[0].last4 == OPENAI[-4:]


def test_concurrent_adds_lose_nothing(tmp_path):
    master = Fernet.generate_key().decode()
    values = [f"sk-concurrent-{index:04d}-abcdefgh" for index in range(8)]

    def add(value: str) -> None:
        open_store(tmp_path, master).add("openai", value)

    threads = [threading.Thread(target=add, args=(value,)) for value in values]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    stored = {key.secret.reveal() for key in open_store(tmp_path, master).secrets()}
    assert stored == set(values)


def test_two_keyring_stores_opened_before_the_first_key_share_one_master_key(tmp_path):
    keyring = FakeKeyring()
    first = open_store(tmp_path, None, keyring=keyring)
    second = open_store(tmp_path, None, keyring=keyring)
    first.add("openai", OPENAI)
    second.add("anthropic", ANTHROPIC)
    reopened = open_store(tmp_path, None, keyring=keyring)
    assert [key.provider for key in reopened.list()] == ["openai", "anthropic"]
