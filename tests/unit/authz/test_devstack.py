"""The local stack's authz secrets and the banner that hands out the demo key."""

from __future__ import annotations

from pathlib import Path

from llmproxy.config import DEFAULT_CONFIG, load_config
from llmproxy.devstack.__main__ import banner
from llmproxy.devstack.authz import ensure_secrets
from llmproxy.devstack.stack import Stack

NAMES = ("LLMPROXY_AUTHZ_HMAC_SECRET", "LLMPROXY_ADMIN_TOKEN", "LLMPROXY_SERVICE_TOKEN")
CONFIG = load_config(DEFAULT_CONFIG, environ={})


def test_missing_secrets_are_generated_and_given_ones_kept() -> None:
    environ: dict[str, str] = {}
    assert ensure_secrets(environ, CONFIG) == list(NAMES)
    assert all(len(environ[name]) >= 32 for name in NAMES)
    again = dict(environ)
    assert ensure_secrets(again, CONFIG) == []
    assert again == environ
    partial = {"LLMPROXY_ADMIN_TOKEN": "mine"}
    assert ensure_secrets(partial, CONFIG) == [NAMES[0], NAMES[2]]
    assert partial["LLMPROXY_ADMIN_TOKEN"] == "mine"  # noqa: S105 - a test value


def stack(environ: dict[str, str]) -> Stack:
    config = load_config(DEFAULT_CONFIG, environ={})
    return Stack(config, DEFAULT_CONFIG, Path("unused-workdir"), environ)


def test_the_banner_prints_a_curl_with_the_demo_key_and_says_what_was_generated() -> None:
    generated = stack({})
    text = banner(generated, "sk-llmp-0123456789abcdef-secret")
    assert "-H 'authorization: Bearer sk-llmp-0123456789abcdef-secret'" in text
    assert generated.environ["LLMPROXY_ADMIN_TOKEN"] in text
    assert "random for this run: $LLMPROXY_ADMIN_TOKEN unset" in text
    assert "random secret for this run ($LLMPROXY_AUTHZ_HMAC_SECRET unset)" in text
    assert generated.environ["LLMPROXY_AUTHZ_HMAC_SECRET"] not in text
    assert generated.environ["LLMPROXY_SERVICE_TOKEN"] not in text
    # Every control call needs a token: the example carries one, and says how to make more.
    assert '$GRPCURL -H "authorization: Bearer $LLMPROXY_ADMIN_TOKEN" $LLMPROXY_CONTROL ' in text
    assert "authz.cli --target 127.0.0.1:8081 tokens create --role operator --name $USER" in text


def test_the_banner_never_prints_a_token_the_user_set() -> None:
    own = stack(dict.fromkeys(NAMES, "users-own-value-" + "x" * 32))
    text = banner(own)
    assert "users-own-value" not in text
    assert "Admin token     $LLMPROXY_ADMIN_TOKEN" in text
    assert "random" not in text
