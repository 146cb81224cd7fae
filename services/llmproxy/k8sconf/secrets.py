"""What each pod reads from the one Secret: references only, never values.

The Secret (objects.SECRET) is created by the operator (docs/kubernetes.md shows the command);
each pod reads only the keys it needs, into the environment variables the configuration names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmproxy.common.contract import SERVICES
from llmproxy.config import StackConfig
from llmproxy.k8sconf.objects import SECRET

REDIS_URL_ENV = "LLMPROXY__REDIS__URL"


@dataclass(frozen=True)
class SecretRef:
    """One key of the Secret, the variable a pod reads it into, and whether it must be set."""

    key: str
    env: str
    required: bool


def key_of(env: str) -> str:
    """The Secret key for an environment variable: OPENAI_API_KEY -> openai-api-key."""
    return env.lower().replace("_", "-")


def refs_for(config: StackConfig, service: str) -> list[SecretRef]:
    """The Secret keys a service's pods read."""
    control = config.control
    refs = [
        SecretRef(key_of(control.service_token_env), control.service_token_env, required=True),
        # Possibly with a password: a Secret, not the ConfigMap (the Sentinel component
        # replaces it with the in-cluster URL).
        SecretRef("redis-url", REDIS_URL_ENV, required=True),
    ]
    if service == "authz":
        hmac = config.services.authz.hmac_secret_env
        refs.append(SecretRef(key_of(hmac), hmac, required=True))
        # The bootstrap admin token: authz needs it for the first call (docs/security.md).
        refs.append(SecretRef(key_of(control.admin_token_env), control.admin_token_env, False))
    if service in {"router", "health"}:
        # Any subset of the providers may have a key; one at least must (docs/kubernetes.md).
        refs.extend(
            SecretRef(key_of(p.api_key_env), p.api_key_env, required=False)
            for p in config.providers
            if p.api_key_env is not None
        )
    return refs


def all_refs(config: StackConfig) -> list[SecretRef]:
    """Every key of the Secret, once, in a stable order."""
    seen: dict[str, SecretRef] = {}
    for service in SERVICES:
        for ref in refs_for(config, service):
            seen.setdefault(ref.key, ref)
    return list(seen.values())


def env_from_secret(refs: list[SecretRef]) -> list[dict[str, Any]]:
    """Container env entries reading refs from the Secret."""
    return [
        {
            "name": ref.env,
            "valueFrom": {
                "secretKeyRef": {"name": SECRET, "key": ref.key, "optional": not ref.required}
            },
        }
        for ref in refs
    ]
