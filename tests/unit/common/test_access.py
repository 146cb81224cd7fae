"""The access rules in the protos, who they let in, and how credentials are read."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import Descriptor, MethodDescriptor
from hypothesis import given
from hypothesis import strategies as st

from llmproxy._gen.access.v1 import access_pb2
from llmproxy._gen.authz.v1 import authz_pb2
from llmproxy.common.access import (
    BOOTSTRAP_ADMIN,
    OTHER_SERVICES,
    SERVICE_CALLER,
    Caller,
    Role,
    Rule,
    our_rpcs,
    path_of,
    rule_for,
)
from llmproxy.common.audit import REDACTED, arguments_json, find_field, redacted
from llmproxy.common.credentials import (
    MAX_TOKEN_CHARS,
    CredentialError,
    bearer_token,
    claimed_actor,
)

METHODS = our_rpcs()


def test_the_protos_have_rpcs_to_check() -> None:
    services = {m.containing_service.full_name for m in METHODS}
    assert "llmproxy.fault.v1.ChaosAgentService" in services
    assert len(services) >= 8


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.full_name)
def test_every_rpc_says_who_may_call_it(method: MethodDescriptor) -> None:
    assert method.GetOptions().HasExtension(access_pb2.access), (
        f"{method.full_name} has no (llmproxy.access.v1.access) option: say who may call it"
    )
    rule = rule_for(path_of(method))
    assert rule is not None
    # A rule lets someone in, and an open one claims nothing else.
    assert rule.open or rule.role is not None or rule.service
    if rule.open:
        assert rule.role is None
        assert not rule.service
        assert not rule.mutating
    # Calls are audited whole: a mutating RPC answers once, it does not stream.
    assert not (rule.mutating and method.server_streaming)


def test_rpcs_without_a_rule_are_refused_not_open() -> None:
    assert rule_for("/llmproxy.router.v1.RouterService/NoSuchMethod") is None
    assert rule_for("/no.such.Service/Method") is None
    assert rule_for("garbage") is None


def test_the_services_of_other_protos_are_open() -> None:
    for service in OTHER_SERVICES:
        rule = rule_for(f"/{service}/Any")
        assert rule is not None
        assert rule.open


@pytest.mark.parametrize(
    ("method", "viewer", "operator", "admin", "service"),
    [
        ("/llmproxy.fault.v1.FaultService/ListExperiments", True, True, True, False),
        ("/llmproxy.fault.v1.FaultService/EmergencyStop", False, True, True, False),
        ("/llmproxy.authz.v1.AuthzService/CreateKey", False, False, True, False),
        ("/llmproxy.authz.v1.AuthzService/CreateControlToken", False, False, True, False),
        ("/llmproxy.authz.v1.AuthzService/IntrospectToken", False, False, False, True),
        ("/llmproxy.health.v1.ProviderHealthService/ReportOutcomes", False, False, False, True),
        ("/llmproxy.health.v1.ProviderHealthService/WatchProviders", True, True, True, True),
        ("/llmproxy.ratelimit.v1.RateLimitControlService/ReconcileTokensBatch", *[False] * 3, True),
        ("/llmproxy.ratelimit.v1.RateLimitControlService/ResetUsage", False, True, True, False),
        ("/llmproxy.router.v1.RouterService/WarmCache", False, True, True, False),
        ("/llmproxy.fault.v1.ChaosAgentService/ApplyStress", False, True, True, True),
    ],
)
def test_who_may_call_what(
    method: str, viewer: bool, operator: bool, admin: bool, service: bool
) -> None:
    rule = rule_for(method)
    assert rule is not None
    people = [Caller(actor=f"token:{r.label}", role=r) for r in Role]
    assert [c.may_call(rule) for c in people] == [viewer, operator, admin]
    assert SERVICE_CALLER.may_call(rule) is service
    assert BOOTSTRAP_ADMIN.may_call(rule) is admin


def test_refusals_name_who_may_call() -> None:
    assert Rule(role=Role.OPERATOR, service=True).describe() == (
        "a control token of role operator or above or the stack's service token"
    )
    assert Rule().describe() == "nobody"


def test_roles_parse_from_text() -> None:
    assert Role.parse(" Operator ") is Role.OPERATOR
    with pytest.raises(ValueError, match="one of viewer, operator, admin"):
        Role.parse("root")


@pytest.mark.parametrize(
    ("metadata", "token"),
    [
        ((("authorization", "Bearer abc"),), "abc"),
        ((("Authorization", "bearer   abc  "),), "abc"),
        ((("authorization", b"Bearer abc"), ("x-other", "1")), "abc"),
    ],
)
def test_bearer_tokens_are_read(metadata: tuple[tuple[str, object], ...], token: str) -> None:
    assert bearer_token(metadata) == token


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (None, "need the metadata 'authorization: Bearer <control token>'"),
        ((), "need the metadata"),
        ((("authorization", "Basic abc"),), "must read 'Bearer <control token>'"),
        ((("authorization", "Bearer"),), "must read 'Bearer <control token>'"),
        ((("authorization", "Bearer a"), ("authorization", "Bearer b")), "not several"),
        ((("authorization", "Bearer " + "a" * (MAX_TOKEN_CHARS + 1)),), "longer than 512"),
        ((("authorization", "Bearer a\x00b"),), "printable ASCII"),
        ((("authorization", "Bearer a b"),), "without spaces"),
        ((("authorization", "Bearer é"),), "printable ASCII"),
    ],
)
def test_bad_credentials_are_refused_with_a_reason(metadata: object, message: str) -> None:
    with pytest.raises(CredentialError, match=message):
        bearer_token(metadata)  # type: ignore[arg-type]


metadata_values = st.one_of(st.text(max_size=600), st.binary(max_size=600))
metadata_entries = st.lists(
    st.tuples(
        st.sampled_from(["authorization", "Authorization", "x-llmproxy-actor", "x"]),
        metadata_values,
    ),
    max_size=4,
)


@given(metadata_entries)
def test_no_metadata_makes_the_parser_fail_otherwise(entries: list[tuple[str, object]]) -> None:
    try:
        token = bearer_token(entries)
    except CredentialError:
        return
    assert 0 < len(token) <= MAX_TOKEN_CHARS
    assert token.isprintable()
    claimed_actor(entries)  # never raises either


def test_the_claimed_actor_is_short_and_printable() -> None:
    assert claimed_actor((("x-llmproxy-actor", "alice"),)) == "alice"
    assert len(claimed_actor((("x-llmproxy-actor", "a" * 500),))) == 64
    assert claimed_actor((("x-llmproxy-actor", "a\nb"),)) == ""


TOKEN_ID = "0123456789abcdef"  # noqa: S105 - an id, public


def test_secrets_are_redacted_wherever_they_sit() -> None:
    created = authz_pb2.CreateControlTokenResponse(
        token=authz_pb2.ControlToken(token_id=TOKEN_ID, name="ci"),
        secret="ct-llmp-0123456789abcdef-secret",  # noqa: S106 - a test value
    )
    values = redacted(created)
    assert values["secret"] == REDACTED
    assert values["token"]["token_id"] == TOKEN_ID
    assert find_field(values, "token_id") == TOKEN_ID
    assert "secret-" not in arguments_json(created)
    asked = authz_pb2.IntrospectTokenRequest(token="ct-llmp-x")  # noqa: S106 - a test value
    assert redacted(asked) == {"token": REDACTED}
    key = authz_pb2.CreateKeyResponse(secret="sk-llmp-x")  # noqa: S106 - a test value
    assert "sk-llmp" not in arguments_json(key)


def test_every_secret_field_of_our_protos_is_marked_for_redaction() -> None:
    # A string field that holds a secret and lacks the mark would reach the audit trail.
    seen: set[str] = set()

    def check(message: Descriptor) -> None:
        if message.full_name in seen:
            return
        seen.add(message.full_name)
        for field in message.fields:
            if field.message_type is not None:
                check(field.message_type)
            elif field.name in {"secret", "token", "api_key", "password"}:
                assert field.GetOptions().debug_redact, f"{message.full_name}.{field.name}"

    for method in METHODS:
        check(method.input_type)
        check(method.output_type)
    assert "llmproxy.authz.v1.IntrospectTokenRequest" in seen


def test_arguments_are_cut_to_a_bounded_size() -> None:
    request = authz_pb2.CreateKeyRequest(tenant="t", labels={f"k{i}": "v" * 50 for i in range(99)})
    text = arguments_json(request)
    assert len(text) <= 2000
    assert text.endswith("...")
    assert redacted(request)["labels"]["k1"] == "v" * 50
