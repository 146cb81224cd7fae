"""API key format, generation and the keyed hash."""

from __future__ import annotations

import pytest

from llmproxy.authz.errors import SecretConfigError
from llmproxy.authz.keys import (
    KeyHasher,
    hasher_from_env,
    key_id_of,
    key_prefix,
    new_key,
    new_key_id,
)

SECRET = b"s" * 32


def test_a_new_key_carries_its_id_and_256_random_bits() -> None:
    key_id = new_key_id()
    key = new_key(key_id)
    assert key.startswith(key_prefix(key_id) + "-")
    assert key_id_of(key) == key_id
    assert len(key) == len("sk-llmp-") + 16 + 1 + 43
    assert new_key(key_id) != key


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sk-llmp-",
        "sk-abc",
        "sk-llmp-0123456789abcdef",
        "sk-llmp-0123456789ABCDEF-" + "a" * 43,  # ids are lowercase hex
        "sk-llmp-0123456789abcdef-" + "a" * 42,
        "sk-llmp-0123456789abcdef-" + "a" * 44,
        "sk-llmp-0123456789abcdef-" + "a" * 42 + "!",
        "x" * 10_000,
    ],
)
def test_malformed_keys_have_no_id(text: str) -> None:
    assert key_id_of(text) is None


def test_the_hash_is_keyed_by_the_server_secret() -> None:
    key = new_key(new_key_id())
    digest = KeyHasher(SECRET).digest(key)
    assert len(digest) == 64
    assert key not in digest
    assert KeyHasher(SECRET).matches(key, digest)
    assert not KeyHasher(b"t" * 32).matches(key, digest)
    assert not KeyHasher(SECRET).matches(key + "x", digest)
    assert not KeyHasher(SECRET).matches(key, "")


def test_secret_comes_from_the_environment() -> None:
    key = new_key(new_key_id())
    hasher = hasher_from_env({"S": "x" * 40}, "S")
    assert hasher.matches(key, KeyHasher(b"x" * 40).digest(key))


@pytest.mark.parametrize(
    ("environ", "message"),
    [({}, r"\$S is not set"), ({"S": ""}, r"\$S is not set"), ({"S": "short"}, "at least 32")],
)
def test_missing_or_short_secret_is_a_clear_error(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SecretConfigError, match=message):
        hasher_from_env(environ, "S")
