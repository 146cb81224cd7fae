"""Who may call which RPC: the rules the protos declare, and the callers they are checked against.

Every RPC of our protos carries an `(llmproxy.access.v1.access)` option (proto/llmproxy/access);
the services we serve from other projects' protos (gRPC health and reflection, Envoy's
ext_authz, rate limit and xDS) are listed here. An RPC with no rule is refused: a new RPC
cannot be served before someone decides who may call it.
"""

from __future__ import annotations

import enum
import pkgutil
from dataclasses import dataclass
from functools import cache
from importlib import import_module

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor

import llmproxy._gen
from llmproxy._gen.access.v1 import access_pb2


class Role(enum.IntEnum):
    """A control token's role; each includes the ones below it."""

    VIEWER = access_pb2.ROLE_VIEWER
    OPERATOR = access_pb2.ROLE_OPERATOR
    ADMIN = access_pb2.ROLE_ADMIN

    @property
    def label(self) -> str:
        """The role as people write it: viewer, operator, admin."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        """The role named text (any case); ValueError naming the roles otherwise."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(r.label for r in cls)
            raise ValueError(f"unknown role {text!r}: one of {names}") from None


@dataclass(frozen=True)
class Rule:
    """Who may call one RPC."""

    role: Role | None = None  # the least role a person needs; None: no person may
    service: bool = False  # the stack's own services may, with the service token
    open: bool = False  # no credential checked here (data plane, probes, reflection)
    mutating: bool = False  # calls by people are audited

    def describe(self) -> str:
        """Who may call, for refusal messages."""
        who = []
        if self.role is not None:
            who.append(f"a control token of role {self.role.label} or above")
        if self.service:
            who.append("the stack's service token")
        return " or ".join(who) or "nobody"


OPEN = Rule(open=True)

# Services of other projects' protos we serve. Open ones: probes and load balancers must reach
# gRPC health, and reflection only describes what the protos already publish. The rest are
# the data plane Envoy calls; services bind to loopback (or sit behind a network policy) so
# that nothing but Envoy reaches them.
OTHER_SERVICES: dict[str, Rule] = {
    "grpc.health.v1.Health": OPEN,
    "grpc.reflection.v1alpha.ServerReflection": OPEN,
    "grpc.reflection.v1.ServerReflection": OPEN,
    "envoy.service.auth.v3.Authorization": OPEN,
    "envoy.service.ratelimit.v3.RateLimitService": OPEN,
    "envoy.service.endpoint.v3.EndpointDiscoveryService": OPEN,
    "envoy.service.runtime.v3.RuntimeDiscoveryService": OPEN,
}


def our_rpcs() -> list[MethodDescriptor]:
    """Every RPC of every proto under proto/llmproxy, in a stable order."""
    names = sorted(
        m.name
        for m in pkgutil.walk_packages(llmproxy._gen.__path__, "llmproxy._gen.")
        if m.name.endswith("_pb2")
    )
    return [
        method
        for name in names
        for service in import_module(name).DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]


def path_of(method: MethodDescriptor) -> str:
    """The RPC's full method name as gRPC carries it: `/package.Service/Method`."""
    return f"/{method.containing_service.full_name}/{method.name}"


@cache
def rule_for(method: str) -> Rule | None:
    """The rule of a full method name (`/package.Service/Method`), or None when none is known."""
    service, _, name = method.lstrip("/").rpartition("/")
    if service in OTHER_SERVICES:
        return OTHER_SERVICES[service]
    try:
        descriptor = descriptor_pool.Default().FindServiceByName(service)
    except KeyError:
        return None
    found = descriptor.methods_by_name.get(name)
    if found is None or not found.GetOptions().HasExtension(access_pb2.access):
        return None
    access = found.GetOptions().Extensions[access_pb2.access]
    return Rule(
        role=Role(access.role) if access.role else None,
        service=access.service,
        open=access.data_plane,
        mutating=access.mutating,
    )


@dataclass(frozen=True)
class Caller:
    """Who a call comes from, once its credential is checked."""

    actor: str  # `token:<id>`, `bootstrap-admin`, `service`: what the audit trail names
    role: Role | None = None  # a person's role; None for the service identity
    is_service: bool = False
    name: str = ""  # who holds the token, for the audit trail

    @property
    def role_label(self) -> str:
        """The role as the audit trail writes it."""
        return "service" if self.is_service else (self.role.label if self.role else "")

    def may_call(self, rule: Rule) -> bool:
        """Whether rule lets this caller in."""
        if self.is_service:
            return rule.service
        return rule.role is not None and self.role is not None and self.role >= rule.role


SERVICE_CALLER = Caller(actor="service", is_service=True)
BOOTSTRAP_ADMIN_ID = "bootstrap-admin"
BOOTSTRAP_ADMIN = Caller(actor=BOOTSTRAP_ADMIN_ID, role=Role.ADMIN, name="$LLMPROXY_ADMIN_TOKEN")
