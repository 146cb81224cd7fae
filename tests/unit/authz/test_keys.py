"""API key and control token format, generation and the keyed hash."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmproxy.authz.errors import SecretConfigError
from llmproxy.authz.keys import (
    API_KEY,
    CONTROL_TOKEN,
    KeyHasher,
    SecretMatch,
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


def test_a_new_control_token_carries_its_id_and_is_no_api_key() -> None:
    token_id = CONTROL_TOKEN.new_id()
    token = CONTROL_TOKEN.new(token_id)
    assert token.startswith(f"ct-llmp-{token_id}-")
    assert len(token) == len("ct-llmp-") + 16 + 1 + 43
    assert CONTROL_TOKEN.id_of(token) == token_id
    assert CONTROL_TOKEN.shown(token_id) == f"ct-llmp-{token_id}"
    assert key_id_of(token) is None
    assert CONTROL_TOKEN.id_of(new_key(token_id)) is None
    assert CONTROL_TOKEN.new(token_id) != token


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ct-llmp-",
        "ct-llmp-0123456789abcdef",
        "ct-llmp-0123456789abcdef-",
        "ct-llmp-0123456789ABCDEF-" + "a" * 43,
        "ct-llmp-0123456789abcde-" + "a" * 44,
        "ct-llmp-0123456789abcdef-" + "a" * 42,
        "ct-llmp-0123456789abcdef-" + "a" * 44,
        "ct-llmp-0123456789abcdef-" + "a" * 42 + "=",
        "ct-llmp-0123456789abcdef-" + "a" * 43 + "\n",  # `$` would have let it through
        " ct-llmp-0123456789abcdef-" + "a" * 43,
        "CT-LLMP-0123456789abcdef-" + "a" * 43,
        "ct-llmp-" + "0" * 10_000,
    ],
)
def test_malformed_control_tokens_have_no_id(text: str) -> None:
    assert CONTROL_TOKEN.id_of(text) is None


@given(st.text(max_size=200))
def test_parsing_any_text_never_raises(text: str) -> None:
    for kind in (API_KEY, CONTROL_TOKEN):
        found = kind.id_of(text)
        assert found is None or kind.prefix + found in text
        assert kind.id_of(kind.prefix + text) in (None, text[:16])


@given(st.from_regex(r"\Act-llmp-[0-9a-f]{16}-[A-Za-z0-9_-]{43}\Z"))
def test_every_well_formed_token_parses(token: str) -> None:
    assert CONTROL_TOKEN.id_of(token) == token[8:24]
    assert API_KEY.id_of(token) is None


def test_a_previous_secret_matches_only_within_its_grace() -> None:
    hasher = KeyHasher(SECRET)
    old, new = new_key("0" * 16), new_key("0" * 16)
    current, previous = hasher.digest(new), hasher.digest(old)
    assert hasher.match(new, current, previous, 100.0, 50.0) is SecretMatch.CURRENT
    assert hasher.match(old, current, previous, 100.0, 50.0) is SecretMatch.PREVIOUS
    assert hasher.match(old, current, previous, 100.0, 100.0) is SecretMatch.NONE
    assert hasher.match(old, current, None, None, 50.0) is SecretMatch.NONE
    assert hasher.match("x", current, previous, 100.0, 50.0) is SecretMatch.NONE


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
