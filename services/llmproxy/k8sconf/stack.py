"""The configuration as the cluster's pods and Envoy see it, through the config's own fields.

Every service is reached at its Service's name (`host`) and binds every interface
(`bind_host`); Envoy is reached at its internal Service. Each pod is one instance (instance 0):
`instances` stays as configured, the replica count, which the rate limiter's local fallback
divides its limits by. Envoy's clusters name each service once: the headless Service's DNS name
resolves to every ready pod (STRICT_DNS), so the cluster needs no port per instance.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from llmproxy.common.contract import SERVICES
from llmproxy.common.errors import ConfigError
from llmproxy.common.settings import AWS_CREDENTIAL_ENV
from llmproxy.config import StackConfig
from llmproxy.k8sconf.objects import ENVOY_INTERNAL, LIMITS_FILE, REDIS_CACHE

ANY_ADDRESS = "0.0.0.0"
CACHE_REDIS_URL = f"redis://{REDIS_CACHE}:6379/0"


def _rebuilt(config: StackConfig, data: dict[str, Any], what: str) -> StackConfig:
    try:
        return StackConfig.model_validate(data)
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in exc.errors()
        )
        raise ConfigError(f"the configuration does not hold {what}: {fields}") from exc


def _placed(config: StackConfig, envoy_host: str) -> dict[str, Any]:
    data = config.model_dump(mode="json")
    for name in SERVICES:
        data["services"][name].update(host=name, bind_host=ANY_ADDRESS)
    if config.cache_redis_url is not None:
        data["services"]["router"]["cache"]["redis_url"] = CACHE_REDIS_URL
    data["envoy"]["host"] = envoy_host
    # The URL comes from the Secret (LLMPROXY__REDIS__URL) or the Sentinel component.
    data["redis"]["managed"] = False
    return data


def in_cluster(config: StackConfig) -> StackConfig:
    """The configuration every llmproxy pod reads (the llmproxy.yaml of the ConfigMap)."""
    data = _placed(config, ENVOY_INTERNAL)
    data["services"]["ratelimit"]["limits_file"] = LIMITS_FILE
    return _rebuilt(config, data, "on Kubernetes")


def for_envoy(config: StackConfig) -> StackConfig:
    """The configuration Envoy's bootstrap is built from: listeners on every interface, one
    DNS endpoint per service. The limits file stays where it is read from here (envoyconf reads
    each limit's failure mode from it)."""
    data = _placed(config, ANY_ADDRESS)
    for name in SERVICES:
        data["services"][name]["instances"] = 1
    return _rebuilt(config, data, "for Envoy on Kubernetes")


def provider_environ(config: StackConfig) -> dict[str, str]:
    """An environment in which every configured provider is enabled.

    The pods read provider keys from the Secret, which the generator never sees: Envoy gets an
    egress cluster for every provider a key may be given for. There is no demo provider on
    Kubernetes, so a configuration without providers is refused.
    """
    if not config.providers:
        raise ConfigError(
            "providers: Kubernetes runs no fake provider; configure at least one provider"
        )
    environ = {p.api_key_env: "set" for p in config.providers if p.api_key_env is not None}
    if any(p.kind == "bedrock" for p in config.providers):
        # Pods get AWS credentials from their service account or the Secret, unseen here.
        environ.update(dict.fromkeys(AWS_CREDENTIAL_ENV[0], "set"))
    return environ
