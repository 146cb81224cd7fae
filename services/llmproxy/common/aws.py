"""AWS credentials and SigV4 signatures, with botocore's own credential chain and signer.

The router signs Bedrock calls and the health service signs Bedrock probes: both resolve
credentials from the process environment the way the AWS SDKs do, and sign with
`botocore.auth.SigV4Auth`, so that no signing code of our own has to be kept right.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, TypeAlias, cast

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, EnvProvider, RefreshableCredentials

from llmproxy.common.errors import LlmproxyError

BEDROCK_SERVICE = "bedrock"
"""The signing name of Bedrock's runtime API (bedrock-runtime.<region>.amazonaws.com)."""

AwsCredentials: TypeAlias = Credentials
"""botocore's credentials: static ones, or refreshable ones (profile roles, web identity)."""


class NoCredentialsError(LlmproxyError):
    """The environment names AWS credentials, but botocore could not load them."""


def bedrock_runtime_url(region: str) -> str:
    """The base URL of Bedrock's runtime API in region."""
    return f"https://bedrock-runtime.{region}.amazonaws.com"


def resolve_credentials(environ: Mapping[str, str]) -> AwsCredentials:
    """The credentials environ names: the key pair (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    AWS_SESSION_TOKEN) first, else botocore's chain (AWS_PROFILE, web identity, container).

    The key pair is read from environ itself, so tests hand in their own; the chain reads the
    process environment and the shared config files, as every AWS SDK does.
    """
    found = EnvProvider(environ=dict(environ)).load()
    if found is None:
        session = botocore.session.Session(profile=environ.get("AWS_PROFILE") or None)
        found = session.get_credentials()
    if found is None:
        raise NoCredentialsError("no AWS credentials found in the environment or profile")
    return cast(AwsCredentials, found)


async def fresh(credentials: AwsCredentials) -> None:
    """Refresh credentials off the event loop when they are about to expire.

    botocore refreshes on first use after expiry, with a blocking network call; doing it here,
    in a thread, keeps that call from stalling every other request.
    """
    if isinstance(credentials, RefreshableCredentials) and credentials.refresh_needed():
        await asyncio.to_thread(credentials.get_frozen_credentials)


def sign(
    credentials: AwsCredentials,
    region: str,
    url: str,
    *,
    method: str = "POST",
    headers: Mapping[str, str],
    body: bytes,
    service: str = BEDROCK_SERVICE,
) -> dict[str, str]:
    """The headers that authenticate this request: authorization, x-amz-date and, with
    temporary credentials, x-amz-security-token.

    url is the provider's own (its host is signed: a proxy on the way must send the same Host);
    headers are the ones to sign besides host, and must be sent unchanged.
    """
    request: Any = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    SigV4Auth(credentials, service, region).add_auth(request)
    signed = {k.lower(): v for k, v in request.headers.items()}
    return {k: v for k, v in signed.items() if k not in {h.lower() for h in headers}}
